#!/usr/bin/env python3
"""Runs Kubeflow's DexSessionManager (dex_login_test.py beside this file,
unmodified) against a gateway, as the Pipelines SDK's documented pattern
does from outside the cluster, and prints the session cookies it obtained,
one JSON list per run.

    session_manager.py ENDPOINT_URL [PARALLEL]

PARALLEL sessions log in at once (default 1). Exits 1 if any login fails.
"""
import concurrent.futures
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dex_login_test import DexSessionManager  # noqa: E402


def login(endpoint):
    return DexSessionManager(
        endpoint_url=endpoint,
        dex_username="user@example.com",
        dex_password="12341234",
        dex_authentication_type="local",
    ).get_session_cookies()


def main():
    endpoint = sys.argv[1]
    parallel = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    with concurrent.futures.ThreadPoolExecutor(max_workers=parallel) as pool:
        futures = [pool.submit(login, endpoint) for _ in range(parallel)]
        cookies, errors = [], []
        for f in futures:
            try:
                cookies.append(f.result(timeout=120))
            except Exception as e:  # reported, then exit 1
                errors.append(str(e))
    print(json.dumps({"cookies": cookies, "errors": errors}))
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
