#!/usr/bin/env bash
# ansible-test bootstraps pip by downloading get-pip, which these machines cannot reach.
# Where the cached script is missing, write a stand-in that uses ensurepip in a child
# process, then pip-installs what it was asked for. A real cached script is left alone.
set -euo pipefail
req=$(python -c 'import ansible_test, os; print(os.path.dirname(ansible_test.__file__))')/_internal/python_requirements.py
version=$(grep -oP "pip='\K[0-9.]+" "$req" | head -n1)
cache=~/.ansible/test/cache/get_pip_${version//./_}.py
[ -f "$cache" ] && exit 0
mkdir -p "$(dirname "$cache")"
cat > "$cache" <<'PY'
# Stand-in for get-pip (written by kexec.kho's tests/utils/get-pip-standin.sh).
import subprocess
import sys

subprocess.check_call([sys.executable, "-m", "ensurepip", "--upgrade"])
args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
if args:
    subprocess.check_call([sys.executable, "-m", "pip", "install"] + args)
PY
echo "wrote pip bootstrap stand-in $cache"
