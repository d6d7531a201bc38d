"""Prints the aggregator's live view of one tenant (JSON on stdin) as a table of costs."""
import json
import sys

WINDOWS = ["1m", "5m", "1h", "24h", "day", "month"]

view = json.load(sys.stdin)
print(f"  watermark {view['watermark_ms']} ms, served by {view['instance']}")
print("  " + f"{'department':<14}{'model':<28}" + "".join(f"{w:>12}" for w in WINDOWS))
for key in view["keys"][:15]:
    costs = "".join(f"{key['windows'][w]['cost'] or '0':>12.12}" for w in WINDOWS)
    print(f"  {key['department'] or '-':<14}{key['model']:<28}{costs}")
if len(view["keys"]) > 15:
    print(f"  ... {len(view['keys']) - 15} more keys")
