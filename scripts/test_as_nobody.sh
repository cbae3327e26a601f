#!/usr/bin/env bash
# Runs the reward package's tests as an unprivileged user (nobody), where the sandbox builds
# its namespaces inside a user namespace instead of switching uid. `make test` calls it when
# it runs as root; as any other user the main test run already is this case.
#
# The test binary and the files its tests read are copied to a directory nobody owns: a
# clone under /root is not readable by nobody.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  echo "test_as_nobody: not root; the main test run already ran the sandbox unprivileged"
  exit 0
fi
GO=${GO:-go}
dir=$(mktemp -d /tmp/autoif-nobody-XXXXXX)
trap 'rm -rf "$dir"' EXIT
mkdir -p "$dir/repo/reward" "$dir/repo/ifeval"
cp go.mod "$dir/repo/"
# The reward tests' own data, and the IFEval responses the native-reward test scores.
cp -r reward/testdata "$dir/repo/reward/"
cp -r ifeval/testdata "$dir/repo/ifeval/"
"$GO" test -c -tags "${GOTAGS:-}" -o "$dir/reward.test" ./reward
chown -R 65534:65534 "$dir/repo"
chmod 755 "$dir" "$dir/reward.test"
cd "$dir/repo/reward"
echo "test_as_nobody: reward tests as uid 65534"
setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all --bounding-set=-all \
  env -i PATH=/usr/bin:/bin HOME="$dir" TMPDIR=/tmp \
  "$dir/reward.test" -test.count=1 -test.timeout=8m "$@"
