"""Serve a saved geovla policy over a local TCP socket (see ``policies.serving``).

    python scripts/serve_policy.py --policy outputs/demo/policy --host 127.0.0.1 --port 8765

Prints one JSON line ``{"host": ..., "port": ...}`` once it listens (``--port 0`` picks a free
port), then answers ``PolicyClient`` requests until Ctrl-C or SIGTERM. Each connection is one robot
with its own observation history; ``--max-connections``, ``--idle-timeout`` and
``--message-timeout`` bound what clients can hold (see ``policies.serving``).
"""

from __future__ import annotations

import argparse
import json
import signal

import torch

from policies.modeling_geovla import GeoVLAPolicy
from policies.serving import PolicyServer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", required=True, help="directory saved by save_pretrained (with its processors)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (loopback by default)")
    parser.add_argument("--port", type=int, default=8765, help="TCP port; 0 picks a free one")
    parser.add_argument("--device", default=None, help="run the policy on this device instead of the saved one")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                        help="weights' dtype (bfloat16: policy.to(torch.bfloat16), for GPUs)")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the sampling (GeoVLAModel.compile_sampling): the first request "
                             "compiles, for a minute or more on a CPU; later ones are faster")
    parser.add_argument("--max-connections", type=int, default=8,
                        help="connections served at once (one thread each); one more is refused with an error")
    parser.add_argument("--idle-timeout", type=float, default=300.0,
                        help="seconds a connection may wait between requests before the server closes it; 0: no limit")
    parser.add_argument("--message-timeout", type=float, default=30.0,
                        help="seconds for a request to arrive whole once it starts, and for a reply to be sent; "
                             "0: no limit")
    args = parser.parse_args()
    if args.max_connections < 1 or args.idle_timeout < 0 or args.message_timeout < 0:
        parser.error(f"--max-connections must be >= 1 (got {args.max_connections}) and the timeouts >= 0 "
                     f"(got {args.idle_timeout}, {args.message_timeout})")

    overrides = {"device": args.device} if args.device else {}
    policy = GeoVLAPolicy.from_pretrained(args.policy, **overrides).to(getattr(torch, args.dtype))
    if policy.processors is None:
        parser.error(f"{args.policy} holds no policy_preprocessor.json: save the policy with its processors")
    if args.compile:
        policy.model.compile_sampling()
    server = PolicyServer(policy, args.host, args.port, max_connections=args.max_connections,
                          idle_timeout=args.idle_timeout or None, message_timeout=args.message_timeout or None)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM stops serving like Ctrl-C
    host, port = server.address
    print(json.dumps({"host": host, "port": port, "policy": str(args.policy), "device": policy.config.device,
                      "dtype": args.dtype, "compile": args.compile, "max_connections": args.max_connections,
                      "idle_timeout": server.timeouts.idle, "message_timeout": server.timeouts.message}), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print(json.dumps({"stopped": True}), flush=True)  # a clean stop, exit status 0


if __name__ == "__main__":
    main()
