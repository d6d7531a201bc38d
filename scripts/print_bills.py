"""Prints the billing API's month-to-date bills (JSON on stdin) as a table. Money stays Decimal."""
import json
import sys
from decimal import Decimal


def total_of(bill):
    return sum((Decimal(t["cost"]) for t in bill["totals"]), Decimal(0))


def main():
    bills = json.load(sys.stdin)
    grand = Decimal(0)
    for bill in sorted(bills, key=total_of, reverse=True):
        total = total_of(bill)
        grand += total
        events = sum(t["events"] for t in bill["totals"])
        currencies = "/".join(t["currency"] for t in bill["totals"])
        print(f"{bill['tenant_id']:<10} {bill['period']}  {events:>7} events  "
              f"total {total:>14.6f} {currencies}  ({bill['unpriced_events']} unpriced events)")
        for model, totals in sorted(bill["by_model"].items(), key=lambda kv: -Decimal(kv[1][0]["cost"])):
            print(f"    model {model:<24} {Decimal(totals[0]['cost']):>14.6f}")
        for dept, totals in sorted(bill["by_department"].items()):
            print(f"    dept  {dept or '(none)':<24} {Decimal(totals[0]['cost']):>14.6f}")
    print(f"{'all tenants':<18} total {grand:.6f}")


if __name__ == "__main__":
    main()
