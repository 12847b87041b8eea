"""Fault injection on the streaming path: a stream of frames, one fault mid-stream, then an exact account.

    ledger.py     the frames sent and the count of what came out (results topic, result.json in S3, dead letters)
    consumers.py  consumer members run as real processes (or threads) under a restart-on-exit supervisor
    scenarios.py  the faults and the scenario runner: frames in = distinct results out, nothing lost
    bench.py      `inctrl bench reliability`: every scenario on a fresh local system, table to benchmarks/
"""
