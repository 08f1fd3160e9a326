#!/usr/bin/env bash
# Installs the ai-infra-build binary for the GitHub Action, verified against the SHA-256
# checksums committed next to this script (dist/checksums/VERSION.sha256). Fail closed: a
# version without committed checksums, or a binary whose checksum differs, stops the job.
#
# Where the binary comes from, first that exists:
#   1. the runner's tool cache:   $RUNNER_TOOL_CACHE/ai-infra-build/VERSION/ARCH/ai-infra-build
#   2. shipped with the action:   dist/ai-infra-build-VERSION-TARGET.tar.gz (air-gapped runners
#                                 that mirror the action repository add the release asset here)
#   3. a download, with retries and timeouts, from `binary-url` (a mirror of the release
#      assets) or else the GitHub release of the action's repository.
# Every one is checked against the committed checksums before it is used; a download is
# then put into the tool cache for the next job on the same runner.
#
# The version: the `version` input, else the action's ref when it is an exact version
# (v1.2.3), else dist/VERSION (the release this checkout of the action ships checksums for;
# the release workflow's pull request updates it, and the major tag `v1` moves to that commit).
#
# Environment (the action maps its inputs to these; tests set them directly):
#   AIB_VERSION            `version` input (`1.2.3` or `v1.2.3`; empty: see above)
#   AIB_BINARY_URL         `binary-url` input: a base URL the asset name is appended to, or a
#                          URL template with {version}, {tag}, {target} and {asset}
#   AIB_ACTION_REF         the action's ref (default $GITHUB_ACTION_REF)
#   AIB_ACTION_REPOSITORY  owner/repo of the action (default $GITHUB_ACTION_REPOSITORY,
#                          then $GITHUB_REPOSITORY), for GitHub release downloads
#   GITHUB_SERVER_URL      default https://github.com
#   RUNNER_TOOL_CACHE      tool cache root (no tool cache when unset)
#   RUNNER_TEMP            scratch space (default: a temp dir)
#   GITHUB_PATH, GITHUB_OUTPUT   when set: the binary's directory is added to PATH, and the
#                          outputs `path`, `version`, `target` and `source` are written
#   AIB_DIST_DIR           where checksums and shipped binaries are (default: this script's dir)
#   AIB_INSTALL_DIR        where a binary from dist/ or a download goes when there is no
#                          tool cache (default: $RUNNER_TEMP/ai-infra-build/VERSION)
#   AIB_RETRIES, AIB_RETRY_DELAY, AIB_CONNECT_TIMEOUT, AIB_MAX_TIME
#                          download retries (5), seconds between them (2), connect timeout (10)
#                          and the bound on one try (300)
#   AIB_UNAME_S, AIB_UNAME_M   stand-ins for `uname -s` / `uname -m` (tests)
#
# Prints the installed binary's path on stdout; progress and errors go to stderr.
# Exit codes: 0 installed, 1 failed (the message says why and what to do).
set -euo pipefail

log() { printf 'ai-infra-build install: %s\n' "$*" >&2; }
die() {
  printf 'ai-infra-build install: error: %s\n' "$1" >&2
  shift
  for help in "$@"; do printf '  help: %s\n' "$help" >&2; done
  exit 1
}

dist_dir=${AIB_DIST_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}
docs="https://github.com/${AIB_ACTION_REPOSITORY:-${GITHUB_ACTION_REPOSITORY:-ai-infra-build/ai-infra-build}}#troubleshooting"

# --- the target ---------------------------------------------------------------------------
os=${AIB_UNAME_S:-$(uname -s)}
machine=${AIB_UNAME_M:-$(uname -m)}
[ "$os" = Linux ] || die "unsupported operating system '$os': ai-infra-build ships static Linux binaries only (x86_64 and aarch64)" \
  "run the job on a Linux runner (runs-on: ubuntu-latest, or a self-hosted Linux runner)"
case "$machine" in
  x86_64 | amd64) target=x86_64-unknown-linux-musl arch=x64 ;;
  aarch64 | arm64) target=aarch64-unknown-linux-musl arch=arm64 ;;
  *) die "unsupported machine '$machine': ai-infra-build ships x86_64 and aarch64 Linux binaries only" \
    "run the job on an x86_64 or aarch64 Linux runner" ;;
esac

# --- the version --------------------------------------------------------------------------
semver='^[0-9]+\.[0-9]+\.[0-9]+([-+][0-9A-Za-z.+-]+)?$'
known_versions() {
  local f names=()
  for f in "$dist_dir"/checksums/*.sha256; do
    [ -e "$f" ] && names+=("$(basename "$f" .sha256)")
  done
  if [ ${#names[@]} -eq 0 ]; then echo "none"; else echo "${names[*]}"; fi
}
ref=${AIB_ACTION_REF:-${GITHUB_ACTION_REF:-}}
requested=${AIB_VERSION:-}
if [ -n "$requested" ]; then
  version=${requested#v}
  why="the version input"
  [[ $version =~ $semver ]] || die "version input '$requested' is not a version like 1.2.3" \
    "leave it empty to use the version this action release ships, or give one of: $(known_versions)"
elif [[ ${ref#v} =~ $semver ]]; then
  version=${ref#v}
  why="the action's ref $ref"
elif [ -s "$dist_dir/VERSION" ]; then
  version=$(tr -d ' \t\r\n' <"$dist_dir/VERSION")
  version=${version#v}
  why="dist/VERSION"
  if [ -n "$ref" ]; then why="$why; the action's ref $ref names no exact version"; fi
  [[ $version =~ $semver ]] || die "dist/VERSION holds '$version', not a version like 1.2.3" \
    "the release pull request writes this file; restore it from the action's repository"
else
  die "this checkout of the action names no released version (dist/VERSION is missing) and the version input is empty" \
    "use a released action (uses: OWNER/ai-infra-build@v1), or set version: to one of: $(known_versions)"
fi
asset="ai-infra-build-$version-$target.tar.gz"
inner="ai-infra-build-$version-$target/ai-infra-build"
log "version $version (from $why), target $target"

# --- the committed checksums (fail closed) ----------------------------------------------------
sums="$dist_dir/checksums/$version.sha256"
[ -f "$sums" ] || die "no committed checksums for version $version ($sums is missing); refusing to install an unverified binary" \
  "versions this checkout of the action can verify: $(known_versions)" \
  "a release tag (v1.2.3) is published before the pull request that commits its checksums: use the major tag (@v1) or the commit it points to"
expected() { # NAME -> the committed hash, or empty
  awk -v name="$1" '{ n = $2; sub(/^\*/, "", n) } n == name { print tolower($1); exit }' "$sums"
}
want_asset=$(expected "$asset")
want_bin=$(expected "$inner")
[[ $want_asset =~ ^[0-9a-f]{64}$ && $want_bin =~ ^[0-9a-f]{64}$ ]] ||
  die "$sums has no SHA-256 for $asset and $inner; refusing to install an unverified binary" \
    "the release of $version may not include $target; versions this checkout knows: $(known_versions)"

sha256() {
  if command -v sha256sum >/dev/null 2>&1; then
    sha256sum "$1" | awk '{ print $1 }'
  elif command -v shasum >/dev/null 2>&1; then
    shasum -a 256 "$1" | awk '{ print $1 }'
  else
    openssl dgst -sha256 -r "$1" | awk '{ print $1 }'
  fi
}
verify() { # FILE EXPECTED WHAT
  local got
  got=$(sha256 "$1")
  if [ "$got" != "$2" ]; then
    die "checksum mismatch for $3: expected sha256 $2, got $got; refusing to use it" \
      "the file was altered or truncated (by a proxy or mirror on the way, or on disk): delete it and run again" \
      "if a fresh download keeps failing the check, something between you and the release alters it; see $docs"
  fi
}

# --- where it goes ------------------------------------------------------------------------
tmp_root=${RUNNER_TEMP:-${TMPDIR:-/tmp}}
work=$(mktemp -d "$tmp_root/ai-infra-build-install.XXXXXX")
trap 'rm -rf "$work"' EXIT
if [ -n "${RUNNER_TOOL_CACHE:-}" ]; then
  cache_dir="$RUNNER_TOOL_CACHE/ai-infra-build/$version/$arch"
else
  cache_dir=""
fi
install_dir=${AIB_INSTALL_DIR:-${cache_dir:-$tmp_root/ai-infra-build/$version}}

finish() { # DIR SOURCE
  local bin="$1/ai-infra-build" out
  out=$("$bin" --version 2>&1) || die "the verified binary does not run on this machine: $out" \
    "check that the runner is $target (uname -m says $machine)"
  log "installed $out from $2: $bin"
  if [ -n "${GITHUB_PATH:-}" ]; then echo "$1" >>"$GITHUB_PATH"; fi
  if [ -n "${GITHUB_OUTPUT:-}" ]; then
    {
      echo "path=$bin"
      echo "version=$version"
      echo "target=$target"
      echo "source=$2"
    } >>"$GITHUB_OUTPUT"
  fi
  echo "$bin"
  exit 0
}

# Unpacks a verified archive and puts its verified binary into the install directory.
install_archive() { # ARCHIVE SOURCE
  verify "$1" "$want_asset" "$asset ($2)"
  mkdir -p "$work/x"
  tar -xzf "$1" -C "$work/x" "$inner" 2>"$work/tar.err" ||
    die "$asset ($2) does not hold $inner: $(cat "$work/tar.err")"
  verify "$work/x/$inner" "$want_bin" "$inner ($2)"
  chmod 0755 "$work/x/$inner"
  if ! mkdir -p "$install_dir" 2>/dev/null || [ ! -w "$install_dir" ]; then
    log "cannot write to $install_dir; installing into the runner's temp directory instead"
    install_dir="$tmp_root/ai-infra-build/$version"
    mkdir -p "$install_dir" || die "cannot create $install_dir"
  fi
  # Rename into place, so a concurrent job never sees a half-written binary.
  cp "$work/x/$inner" "$install_dir/.ai-infra-build.$$"
  mv -f "$install_dir/.ai-infra-build.$$" "$install_dir/ai-infra-build"
  if [ -n "$cache_dir" ] && [ "$install_dir" = "$cache_dir" ]; then
    : >"$cache_dir.complete"
  fi
  finish "$install_dir" "$2"
}

# 1. The tool cache: a binary some earlier job (or the runner's image) put there.
if [ -n "$cache_dir" ] && [ -f "$cache_dir/ai-infra-build" ]; then
  verify "$cache_dir/ai-infra-build" "$want_bin" "the tool cache's $cache_dir/ai-infra-build"
  chmod 0755 "$cache_dir/ai-infra-build" 2>/dev/null || true
  finish "$cache_dir" tool-cache
fi

# 2. Shipped inside the action's checkout.
if [ -f "$dist_dir/$asset" ]; then
  install_archive "$dist_dir/$asset" dist
fi

# 3. A download.
tag="v$version"
if [ -n "${AIB_BINARY_URL:-}" ]; then
  url=$AIB_BINARY_URL
  if [[ $url == *"{"*"}"* ]]; then
    url=${url//\{version\}/$version}
    url=${url//\{tag\}/$tag}
    url=${url//\{target\}/$target}
    url=${url//\{asset\}/$asset}
  else
    url="${url%/}/$asset"
  fi
  where="binary-url"
else
  repository=${AIB_ACTION_REPOSITORY:-${GITHUB_ACTION_REPOSITORY:-${GITHUB_REPOSITORY:-}}}
  [ -n "$repository" ] || die "no binary in the tool cache or in dist/, and no repository to download the release from" \
    "set binary-url: to a mirror of the release assets, or put $asset into the action's dist/"
  url="${GITHUB_SERVER_URL:-https://github.com}/$repository/releases/download/$tag/$asset"
  where="the GitHub release"
fi
command -v curl >/dev/null 2>&1 || die "curl is needed to download $asset" \
  "install curl on the runner, or put $asset into the action's dist/ or the tool cache"
retry_flags=(--retry "${AIB_RETRIES:-5}" --retry-delay "${AIB_RETRY_DELAY:-2}" --retry-connrefused)
if curl --help all 2>/dev/null | grep -q -- --retry-all-errors; then
  retry_flags+=(--retry-all-errors)
fi
# Credentials never go into the URL's log line.
shown=$(printf '%s' "$url" | sed -E 's#://[^/@]*@#://***@#')
log "downloading $shown ($where)"
if ! curl --fail --location --silent --show-error \
  --proto '=https,http,file' --proto-redir '=https,http' \
  --connect-timeout "${AIB_CONNECT_TIMEOUT:-10}" --max-time "${AIB_MAX_TIME:-300}" \
  "${retry_flags[@]}" --output "$work/$asset" "$url" 2>"$work/curl.err"; then
  die "cannot download $shown: $(tail -n 3 "$work/curl.err" | tr '\n' ' ')" \
    "on a network that cannot reach github.com, set binary-url: to a mirror of the release assets" \
    "or put $asset into the action's dist/ (air-gapped runners that mirror the action repository)" \
    "see $docs"
fi
install_archive "$work/$asset" download
