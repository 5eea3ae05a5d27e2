"""`payorch simulate-3ds`: the customer's side of a simulated 3-D Secure challenge, as
the bank's page and Stripe.js are for a Stripe PaymentIntent. Test mode only: it calls
the server's HTTP side, which answers it only while no Stripe processor is configured
(docs/classification.md, "3-D Secure on the simulated processor")."""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request

from payorch.entrypoints import cli_arguments

DEFAULT_HTTP = "http://127.0.0.1:9464"


def cmd_simulate_3ds(args: argparse.Namespace) -> int:
    base = (args.http or os.environ.get("PAYORCH_HTTP_URL") or DEFAULT_HTTP).rstrip("/")
    intent = urllib.parse.quote(args.intent_id, safe="")
    body = urllib.parse.urlencode(
        {"client_secret": args.client_secret, "outcome": "fail" if args.fail else "complete"}
    ).encode()
    request = urllib.request.Request(f"{base}/simulated/3ds/{intent}", data=body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=args.timeout) as answer:
            print(json.dumps(json.loads(answer.read()), indent=2))
            return 0
    except urllib.error.HTTPError as refused:
        text = refused.read().decode("utf-8", "replace")
        if refused.code == 404 and not text.startswith("{"):
            text = json.dumps(
                {
                    "error": {
                        "reason": "no_simulated_3ds",
                        "message": f"{base} has no simulated 3-D Secure page: is the server"
                        " running with simulated processors only (no Stripe)?",
                    }
                }
            )
        print(text, file=sys.stderr)
        return 1
    except urllib.error.URLError as unreachable:
        print(f"payorch: cannot reach {base}: {unreachable.reason}", file=sys.stderr)
        return 2


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "simulate-3ds",
        help="pass (or --fail) a simulated processor's 3-D Secure challenge, as the customer"
        " (test mode; then `payorch confirm`)",
    )
    p.add_argument("intent_id", help="the paused step's processor payment id (pi_sim_...)")
    p.add_argument(
        "--client-secret", required=True, help="the paused step's next_action.client_secret"
    )
    p.add_argument("--fail", action="store_true", help="fail the challenge instead")
    p.add_argument(
        "--http", help=f"the server's HTTP side (PAYORCH_HTTP_URL, default {DEFAULT_HTTP})"
    )
    p.add_argument(
        "--timeout", type=cli_arguments.timeout, default=30.0, help="seconds (default 30)"
    )
    p.set_defaults(func=cmd_simulate_3ds)
