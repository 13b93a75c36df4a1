#!/usr/bin/env python3
"""Drive the official Segment Python SDK (segment-analytics-python) against Livora.

Run with the interpreter of the venv made by scripts/test-deps.sh:

    $LIVORA_TEST_DEPS/venv/bin/python tests/sdk/send_python.py

Environment:
    LIVORA_URL        base URL of the server, e.g. http://127.0.0.1:8080
    LIVORA_WRITE_KEY  write key (sent as HTTP Basic username and as body writeKey)
    RUN_ID            unique id for this run; all ids are derived from it
    LIVORA_SDK_GZIP   optional, "1" to make the SDK gzip its request bodies

Prints to stdout a JSON array with one object per call, taken from the message the
SDK actually queued (so it includes SDK-side normalisation):
    {"type", "userId"|"anonymousId", "event"|"name"|"category"|"groupId"|"previousId",
     "properties"|"traits", "messageId", "timestamp"}
Exits non-zero if the SDK reported any upload error.
"""

import json
import logging
import os
import sys

import segment.analytics as analytics


def env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        print(f"send_python: {name} is not set", file=sys.stderr)
        sys.exit(2)
    return value


def main() -> int:
    url = env("LIVORA_URL")
    write_key = env("LIVORA_WRITE_KEY")
    run_id = env("RUN_ID")

    errors = []

    def on_error(error, batch):
        errors.append(f"{type(error).__name__}: {error} ({len(batch)} message(s))")

    logging.getLogger("segment").addHandler(logging.StreamHandler(sys.stderr))

    analytics.write_key = write_key
    analytics.host = url
    analytics.on_error = on_error
    analytics.sync_mode = False
    analytics.gzip = os.environ.get("LIVORA_SDK_GZIP") == "1"
    analytics.max_retries = 2
    analytics.timeout = 10

    user_id = f"py-{run_id}"
    anon_id = f"py-anon-{run_id}"

    results = []

    def record(ret):
        ok, msg = ret
        if not ok:
            errors.append(f"enqueue failed for {msg.get('type')}")
        results.append(msg)

    record(
        analytics.identify(
            user_id=user_id,
            traits={"email": f"py-{run_id}@example.com", "plan": "pro", "logins": 3},
        )
    )
    record(
        analytics.track(
            user_id=user_id,
            event="Order Completed",
            properties={
                "order_id": f"py-order-{run_id}",
                "revenue": 42.5,
                "currency": "EUR",
                "products": [{"sku": "A1", "qty": 2}],
            },
        )
    )
    record(analytics.page(user_id=user_id, category="Docs", name="Pricing", properties={"path": "/pricing"}))
    record(analytics.screen(user_id=user_id, name="Home Screen", properties={"tab": "feed"}))
    record(analytics.group(user_id=user_id, group_id=f"py-group-{run_id}", traits={"name": "Acme", "employees": 20}))
    record(analytics.alias(previous_id=anon_id, user_id=user_id))
    record(analytics.track(anonymous_id=anon_id, event="Product Viewed", properties={"sku": "A1"}))

    # flush() blocks until every queued message was uploaded or reported to
    # on_error; shutdown() flushes again and joins the consumer thread.
    analytics.flush()
    analytics.shutdown()

    keys = (
        "type",
        "userId",
        "anonymousId",
        "event",
        "name",
        "category",
        "groupId",
        "previousId",
        "properties",
        "traits",
        "messageId",
        "timestamp",
    )
    described = [{k: msg[k] for k in keys if msg.get(k) is not None} for msg in results]
    print(json.dumps(described, indent=2))

    if errors:
        for e in errors:
            print(f"send_python: SDK error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
