#!/bin/bash
# tests/cli/test_install.sh: `ninja install` into a temporary prefix (configure.lua --prefix)
# installs a poa that works from there (another working directory, POA_HOME unset), the
# shipped recipes under share/poa/recipes, which the installed poa finds by name, and the
# README; DESTDIR stages the same tree under another root. build.ninja is configured again
# without the prefix at the end.
set -u
cd "$(dirname "$0")/../.."
tmp=$(mktemp -d)
trap 'lua5.4 configure.lua > /dev/null; rm -rf "$tmp"' EXIT
check() { if eval "$2"; then echo "PASS $1"; else echo "FAIL $1"; fi; }
prefix=$tmp/prefix
lua5.4 configure.lua --prefix="$prefix" > /dev/null && ninja install > "$tmp/install.log" 2>&1
check "ninja install: bin/poa, the shipped recipes and the README under the prefix" \
      "[ -x $prefix/bin/poa ] && [ -f $prefix/share/doc/poa/README.md ] &&
       [ \$(ls $prefix/share/poa/recipes/*.lua | wc -l) -eq \$(ls recipes/*.lua | wc -l) ]"
mkdir -p "$tmp/work"
(cd "$tmp/work" && env -u POA_HOME "$prefix/bin/poa" list "$prefix/share/poa/recipes/vit_l16_ee1200.lua") > "$tmp/list" 2>&1
check "the installed poa lists an installed recipe (ViT-L family, 143 members)" \
      "grep -q '^vit_l16_ee1200: 143 members' $tmp/list"
(cd "$tmp/work" && env -u POA_HOME "$prefix/bin/poa" list quickstart) > "$tmp/byname" 2>&1
check "the installed poa finds a shipped recipe by name (poa list quickstart)" \
      "grep -q '^quickstart: 9 members' $tmp/byname"
(cd "$tmp/work" && env -u POA_HOME "$prefix/bin/poa" list nonexistent_recipe) > "$tmp/missing" 2>&1
check "a recipe name that is neither a file nor shipped is named in the error" \
      "grep -q 'nonexistent_recipe' $tmp/missing"
lua5.4 configure.lua > /dev/null && DESTDIR=$tmp/stage ninja install > "$tmp/stage.log" 2>&1
check "DESTDIR=... ninja install stages the default prefix /usr/local" \
      "[ -x $tmp/stage/usr/local/bin/poa ] && [ -f $tmp/stage/usr/local/share/poa/recipes/quickstart.lua ]"
