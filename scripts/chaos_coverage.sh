#!/usr/bin/env bash
# Every partition shape, packet fault and process fault of `edgesync sim chaos`, each
# alone for three seeds, on real daemons (network namespaces as root). Prints one line
# per run and exits non-zero if any run found a violation.
set -uo pipefail
kinds="isolate-node isolate-region bridged-region three-way-split loss duplicate delay reorder kill-restart pause"
status=0
for kind in $kinds; do
    for seed in 1 2 3; do
        line=$(edgesync sim chaos --seed "$seed" --steps 3 --faults "$kind" --json 2>/dev/null) || status=1
        echo "$kind seed=$seed $(python3 -c 'import json,sys; o=json.loads(sys.stdin.read()); print("converged" if o["converged"] else "NOT CONVERGED", "violations=%d" % len(o["violations"]), "acked=%d" % o["acknowledged"], "timed_out=%d" % o["timed_out"])' <<<"$line")"
    done
done
exit $status
