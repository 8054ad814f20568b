#!/bin/bash
# What an incremental git capture costs (issue 3): a 4,000-commit repository made by fast-import,
# then 1 new commit, 100 new commits, and none; the vault's growth each time, against `git bundle`
# of the same 100 commits. Usage: bench/git_incremental.sh  (REPLICATOR=... for another build)
set -e
R=${REPLICATOR:-$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/replicator}
D=$(mktemp -d); mkdir -p $D/src; cd $D; trap "rm -rf $D" EXIT
export GIT_AUTHOR_NAME=d GIT_AUTHOR_EMAIL=d@x GIT_COMMITTER_NAME=d GIT_COMMITTER_EMAIL=d@x
git init -q --bare -b main src/big.git
python3 - <<'PY' | git -C src/big.git fast-import --quiet
import sys
lines = {}
out = sys.stdout.buffer
for i in range(4000):
    k = i % 50
    lines.setdefault(k, []).append(f"change {i}: lorem ipsum dolor sit amet {i * 7919 % 10007}")
    content = ("\n".join(lines[k]) + "\n").encode()
    msg = f"commit {i}\n".encode()
    out.write(b"commit refs/heads/main\nmark :%d\ncommitter d <d@x> %d +0000\ndata %d\n%s" % (i + 1, 1700000000 + i * 60, len(msg), msg))
    if i:
        out.write(b"from :%d\n" % i)
    out.write(b"M 100644 inline f%02d.txt\ndata %d\n%s\n" % (k, len(content), content))
PY
git clone -q src/big.git work
printf '[vault]\nurl = "%s/vault"\nkey_file = "vault.key"\n[state]\ndir = "state"\n[[jobs]]\nname = "code"\nkind = "git"\nsource = "%s/src"\n' $D $D > config.toml
$R --config config.toml init >/dev/null
vbytes() { find vault -type f -not -path '*/leases/*' -printf '%s\n' | awk '{s+=$1} END {print s}'; }
show() { python3 -c 'import json,sys; j=json.load(sys.stdin)["jobs"][0]; print(sys.argv[1] + ": copied", j["copied"], "objects")' "$1"; }
$R --config config.toml run --json | show "first run (4,000 commits)"; b0=$(vbytes); echo "  vault: $b0 bytes"
cd work; echo one >> f01.txt; git commit -qam one; git push -q origin main; cd ..
$R --config config.toml run --json | show "1 new commit"; b1=$(vbytes); echo "  vault grew by $((b1-b0)) bytes"
cd work; for i in $(seq 1 100); do echo "more $i" >> f0$((i % 7)).txt; git commit -qam "m$i"; done; git push -q origin main; cd ..
$R --config config.toml run --json | show "100 new commits"; b2=$(vbytes); echo "  vault grew by $((b2-b1)) bytes"
git -C src/big.git bundle create $D/ref.bundle main~100..main 2>/dev/null; echo "  git bundle of the same 100 commits: $(stat -c %s $D/ref.bundle) bytes"
$R --config config.toml run --json | show "no change"; b3=$(vbytes); echo "  vault grew by $((b3-b2)) bytes"
