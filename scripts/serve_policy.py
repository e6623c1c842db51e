"""Serve a saved geovla policy over a local TCP socket (see ``policies.serving``).

    python scripts/serve_policy.py --policy outputs/demo/policy --host 127.0.0.1 --port 8765

Prints one JSON line ``{"host": ..., "port": ...}`` once it listens (``--port 0`` picks a free
port), then answers ``PolicyClient`` requests until Ctrl-C or SIGTERM.
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
    args = parser.parse_args()

    overrides = {"device": args.device} if args.device else {}
    policy = GeoVLAPolicy.from_pretrained(args.policy, **overrides).to(getattr(torch, args.dtype))
    if policy.processors is None:
        parser.error(f"{args.policy} holds no policy_preprocessor.json: save the policy with its processors")
    if args.compile:
        policy.model.compile_sampling()
    server = PolicyServer(policy, args.host, args.port)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM stops serving like Ctrl-C
    host, port = server.address
    print(json.dumps({"host": host, "port": port, "policy": str(args.policy), "device": policy.config.device,
                      "dtype": args.dtype, "compile": args.compile}), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print(json.dumps({"stopped": True}), flush=True)  # a clean stop, exit status 0


if __name__ == "__main__":
    main()
