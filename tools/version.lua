-- tools/version.lua: write OUT.c for `poa --version`: `git describe` of the source tree and
-- the build options configure.lua chose. Run by ninja on every build; OUT.c is rewritten only
-- when its text changes, so that (with ninja's restat) poa is relinked only then.
--   lua5.4 tools/version.lua OUT.c "BUILD OPTIONS"
local out_path, options = arg[1], arg[2]
if not out_path or not options then
  io.stderr:write("usage: lua5.4 tools/version.lua OUT.c \"BUILD OPTIONS\"\n")
  os.exit(2)
end
local git = io.popen("git describe --always --dirty --tags 2>/dev/null")
local version = git:read("l") or ""
git:close()
if version == "" then version = "unknown (not a git checkout)" end

local function c_string(s) return '"' .. s:gsub('[\\"]', "\\%0") .. '"' end
local text = table.concat({
  "/* " .. out_path .. ": written by tools/version.lua; do not edit. */",
  '#include "version.h"',
  "const char poa_version[] = " .. c_string(version) .. ";",
  "const char poa_build_options[] = " .. c_string(options) .. ";",
  "",
}, "\n")
local f = io.open(out_path, "r")
local old = f and f:read("a")
if f then f:close() end
if old ~= text then
  f = assert(io.open(out_path, "w"))
  f:write(text)
  f:close()
end
