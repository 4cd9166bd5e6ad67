#!/usr/bin/env bash
# Install what tests/interop needs: Debian's Apache Tomcat 10 jars (libtomcat10-java: Tribes +
# JULI under /usr/share/java) and a JDK (javac) if none is present. Idempotent and quiet: does
# nothing when everything is already there; runs `apt-get update` only if the first install fails.
set -euo pipefail

have_jars() {
    # Same lookup as tests/interop/conftest.py:find_tomcat_jars().
    local name
    for name in tomcat10-tribes tomcat10-juli; do
        if [ ! -f "/usr/share/java/${name}.jar" ] && ! compgen -G "/usr/share/java/${name}-[0-9]*.jar" >/dev/null; then
            return 1
        fi
    done
}

pkgs=()
have_jars || pkgs+=(libtomcat10-java)
{ command -v javac >/dev/null 2>&1 && command -v java >/dev/null 2>&1; } || pkgs+=(default-jdk-headless)

if [ "${#pkgs[@]}" -eq 0 ]; then
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
log="$(mktemp)"
trap 'rm -f "$log"' EXIT

apt_install() {
    $SUDO apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >"$log" 2>&1
}

if ! apt_install; then
    if ! { $SUDO apt-get update -qq >>"$log" 2>&1 && apt_install; }; then
        echo "install-java-interop: apt-get install ${pkgs[*]} failed:" >&2
        tail -n 40 "$log" >&2
        exit 1
    fi
fi

if ! have_jars || ! command -v javac >/dev/null 2>&1; then
    echo "install-java-interop: installed ${pkgs[*]} but javac or the Tomcat jars are still missing" >&2
    exit 1
fi
echo "install-java-interop: installed ${pkgs[*]}"
