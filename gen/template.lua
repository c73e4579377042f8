-- gen/template.lua: read a file of templates/ (from the tree, or the copy built into poa) and
-- fill its $(NAME) holes.
-- Every hole must get a value and every value must be used, so a template and its
-- emitter cannot drift apart silently.
local template = {}

local cache = {}

function template.read(name)
  if not cache[name] then
    local text, err = require("gen.recipe").read_source("templates/" .. name)
    cache[name] = assert(text, err)
  end
  return cache[name]
end

-- fill("attention_forward.c.tmpl", {WIDTH = 384, ...}) -> the text with every $(KEY) replaced.
function template.fill(name, values)
  local used = {}
  local text = template.read(name):gsub("%$%(([%w_]+)%)", function(key)
    local v = values[key]
    if v == nil then error("template " .. name .. ": no value for $(" .. key .. ")", 0) end
    used[key] = true
    return tostring(v)
  end)
  for key in pairs(values) do
    if not used[key] then error("template " .. name .. ": value " .. key .. " is never used", 0) end
  end
  return text
end

return template
