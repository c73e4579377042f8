-- tools/embed.lua: turn the Lua and templates that poa runs (gen/*.lua, models/*.lua,
-- templates/*) into one C source, so that the poa binary carries them and runs from any
-- folder (runtime/lua_sources.c serves them to `require` and to gen/recipe.lua's read_source).
--   lua5.4 tools/embed.lua OUT.c FILE...      (run by ninja; configure.lua gives the file list)
-- Each file becomes a string literal, one per source line, named by its path in the tree.
local out_path = arg[1]
if not out_path or #arg < 2 then
  io.stderr:write("usage: lua5.4 tools/embed.lua OUT.c FILE...\n")
  os.exit(2)
end

-- One source line as the body of a C string literal: printable ASCII as it is, except the
-- characters C gives a meaning to (" \ and ?, which could start a trigraph), the rest in octal.
local function c_literal(line)
  return (line:gsub('["\\?]', function(c) return "\\" .. c end)
              :gsub('[^ -~]', function(c) return string.format("\\%03o", c:byte()) end))
end

local parts = {
  "/* " .. out_path .. ": written by tools/embed.lua from gen/, models/ and templates/; do not edit. */",
  '#include "lua_sources.h"',
  "",
}
local entries = {}
for i = 2, #arg do
  local path = arg[i]
  local f = assert(io.open(path, "rb"))
  local text = f:read("a")
  f:close()
  local name = "file_" .. (i - 1)
  parts[#parts + 1] = "static const char " .. name .. "[] ="
  if text == "" then parts[#parts + 1] = '  ""' end
  for line, newline in text:gmatch("([^\n]*)(\n?)") do
    if line == "" and newline == "" then break end
    parts[#parts + 1] = '  "' .. c_literal(line) .. (newline ~= "" and "\\n" or "") .. '"'
  end
  parts[#parts] = parts[#parts] .. ";"
  entries[#entries + 1] = string.format('  { "%s", %s, sizeof %s - 1 },', c_literal(path), name, name)
end
parts[#parts + 1] = ""
parts[#parts + 1] = "const poa_lua_source poa_lua_sources[] = {"
for _, e in ipairs(entries) do parts[#parts + 1] = e end
parts[#parts + 1] = "};"
parts[#parts + 1] = "const int poa_lua_source_count = " .. #entries .. ";"

local f = assert(io.open(out_path .. ".tmp", "w"))
f:write(table.concat(parts, "\n"), "\n")
f:close()
assert(os.rename(out_path .. ".tmp", out_path))
