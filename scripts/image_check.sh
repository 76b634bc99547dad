#!/usr/bin/env bash
# Proves the Dockerfile's runtime stage without a container engine (none can pull base images here):
# builds the three release executables as the build stage does (static Swift standard library),
# lists the shared libraries each links (ldd), and fails when one of them is not a file of a
# package the runtime stage installs (RUNTIME_PACKAGES in the Dockerfile, found with dpkg -S).
# Then it runs each executable with the library path limited to those packages' libraries, and
# checks with ldd that every library resolves inside that folder.
#
#   scripts/image_check.sh            (make test runs it)
#   SHOPFLEET_IMAGE_CHECK_SKIP_BUILD=1 scripts/image_check.sh   (executables already built)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"
say() { echo "image-check: $*"; }
fail() { echo "image-check: FAILED: $*" >&2; exit 1; }

packages="$(sed -nE 's/^ARG RUNTIME_PACKAGES="([^"]*)"/\1/p' Dockerfile)"
[ -n "$packages" ] || fail "no ARG RUNTIME_PACKAGES=\"…\" line in the Dockerfile"
products=(shopfleet shopfleet-worker shopfleet-worker-ext)
out=".build/release"
if [ -z "${SHOPFLEET_IMAGE_CHECK_SKIP_BUILD:-}" ]; then
  for product in "${products[@]}"; do
    swift build -c release --static-swift-stdlib --product "$product" >/dev/null || fail "swift build --product $product"
  done
fi

# What apt installs for them: the packages and, recursively, their dependencies (Depends and
# Pre-Depends, the first installed alternative of each).
for package in $packages; do
  dpkg -s "$package" >/dev/null 2>&1 || fail "runtime package $package is not installed on this machine (apt-get install $package)"
done
closure=" $packages "
queue="$packages"
while [ -n "$queue" ]; do
  next=""
  for package in $queue; do
    deps="$(dpkg-query -W -f='${Depends},${Pre-Depends}' "$package" 2>/dev/null || true)"
    IFS=',' read -ra items <<<"$deps"
    for item in "${items[@]}"; do
      for alternative in $(tr '|' '\n' <<<"$item" | sed -E 's/\(.*\)//; s/:any//; s/ //g'); do
        [ -n "$alternative" ] || continue
        if dpkg -s "$alternative" >/dev/null 2>&1; then
          case "$closure" in *" $alternative "*) ;; *) closure="$closure$alternative "; next="$next $alternative" ;; esac
          break
        fi
      done
    done
  done
  queue="$next"
done
say "the runtime packages and their dependencies: $(wc -w <<<"$closure") packages"

# Every library file of those packages, linked into one folder.
libs="$(mktemp -d)"
trap 'rm -rf "$libs"' EXIT
for package in $closure; do
  while read -r file; do
    case "$file" in
      *.so|*.so.*) [ -f "$file" ] && ln -sf "$file" "$libs/$(basename "$file")" ;;
    esac
  done < <(dpkg -L "$package")
done

status=0
for product in "${products[@]}"; do
  exe="$out/$product"
  [ -x "$exe" ] || fail "$exe is missing"
  # The Swift runtime must not be a shared library: the image has no Swift.
  if ldd "$exe" | grep -q 'libswift'; then fail "$product links the Swift runtime dynamically (build with --static-swift-stdlib)"; fi
  while read -r name path; do
    [ -n "$path" ] || continue
    real="$(readlink -f "$path")"
    owner="$(dpkg -S "$real" 2>/dev/null | head -1 | cut -d: -f1 || true)"
    [ -n "$owner" ] || owner="$(dpkg -S "$path" 2>/dev/null | head -1 | cut -d: -f1 || true)"
    if [ -z "$owner" ]; then
      echo "image-check: $product links $name ($path), which no Debian package provides" >&2; status=1; continue
    fi
    case "$closure" in
      *" $owner "*) ;;
      *) echo "image-check: $product links $name from package $owner, which the runtime stage does not install (nor any of its packages depends on)" >&2; status=1 ;;
    esac
  done < <(ldd "$exe" | awk '/=>/ { print $1, $3 } !/=>/ && /\// { print $1, $1 }')
  # With the library path limited to the runtime packages' files, every library resolves there…
  while read -r name path; do
    case "$path" in
      "$libs"/*|/lib64/ld-linux-x86-64.so.2|/lib/ld-linux*|"") ;;
      *) echo "image-check: $product: $name resolves outside the runtime packages ($path)" >&2; status=1 ;;
    esac
  done < <(LD_LIBRARY_PATH="$libs" ldd "$exe" | awk '/=>/ { print $1, $3 }')
  # … and the executable runs.
  LD_LIBRARY_PATH="$libs" "$exe" --help >/dev/null 2>&1 || { echo "image-check: $product --help failed with the runtime libraries only" >&2; status=1; }
  say "$product: $(ldd "$exe" | grep -c '=>') shared libraries, all from the runtime packages ($packages) and their dependencies"
done
[ "$status" = 0 ] || fail "see above"
say "the runtime stage provides every library the executables link"
