-- gen/recipe.lua: load a recipe file, merge its model over the family's defaults
-- (models/<family>.lua) and check every field. Errors name the file and the field.
local recipe = {}

local function fail(path, field, message)
  error(string.format("%s: field '%s': %s", path, field, message), 0)
end

local function check_type(path, field, value, kind)
  if type(value) ~= kind then
    fail(path, field, string.format("expected a %s, got %s", kind, type(value)))
  end
end

local function check_range(path, field, r)
  check_type(path, field, r, "table")
  if #r ~= 3 then fail(path, field, "expected {min, max, step}") end
  for i = 1, 3 do
    if math.type(r[i]) ~= "integer" or r[i] <= 0 then
      fail(path, field, "expected positive integers {min, max, step}")
    end
  end
  if r[1] > r[2] then fail(path, field, "min is larger than max") end
  if (r[2] - r[1]) % r[3] ~= 0 then fail(path, field, "max - min is not a multiple of step") end
end

-- The directory holding models/ and gen/ (the source tree).
function recipe.source_dir()
  local here = debug.getinfo(1, "S").source:match("^@(.*)gen/recipe%.lua$")
  return (here == nil or here == "") and "./" or here
end

-- read_source("models/vit.lua") -> text, chunk name; or nil and a message. Inside poa the
-- copy built into the binary (runtime/lua_sources.c registers package.loaded["poa.embedded"]),
-- else the file of the source tree that holds this gen/.
function recipe.read_source(relative)
  local embedded = package.loaded["poa.embedded"]
  if embedded then
    local text, err = embedded.read(relative)
    return text, text and ("@" .. relative) or err
  end
  local path = recipe.source_dir() .. relative
  local f, err = io.open(path, "r")
  if not f then return nil, err end
  local text = f:read("a")
  f:close()
  return text, "@" .. path
end

-- ---- strict values: a name that is not a literal is an error, never nil ----

local literal_help = 'a value is a number, a "quoted string", true/false or a {table}'
local unknown_mt = {}
local function unknown_use(a, b)
  local u = getmetatable(a) == unknown_mt and a or b
  error(string.format("'%s' is not a value (%s)", rawget(u, "name"), literal_help), 2)
end
for _, m in ipairs({ "__index", "__newindex", "__call", "__add", "__sub", "__mul", "__div", "__mod",
                     "__pow", "__unm", "__idiv", "__band", "__bor", "__bxor", "__shl", "__shr",
                     "__bnot", "__concat", "__len", "__lt", "__le" }) do
  unknown_mt[m] = unknown_use
end

-- The environment recipes, models and override values are evaluated in: no globals, and a
-- name that is not defined is an `unknown` marker (flase, abc), found by unknown_in.
local function strict_env()
  return setmetatable({}, { __index = function(_, k) return setmetatable({ name = k }, unknown_mt) end })
end

-- The path ("train.elastic") and name of the first unknown marker in v, or nil.
local function unknown_in(v, prefix, seen)
  if getmetatable(v) == unknown_mt then return prefix, rawget(v, "name") end
  if type(v) ~= "table" then return nil end
  seen = seen or {}
  if seen[v] then return nil end
  seen[v] = true
  for k, x in pairs(v) do
    local field = prefix == "" and tostring(k) or (type(k) == "number" and prefix .. "[" .. k .. "]")
                  or prefix .. "." .. tostring(k)
    if getmetatable(k) == unknown_mt then return field, rawget(k, "name") end
    local p, name = unknown_in(x, field, seen)
    if p then return p, name end
  end
  return nil
end

-- Runs a loaded chunk (made in strict_env()); errors name `where` (and the field of an
-- unknown name).
local function run_chunk(chunk, where)
  local ok, v = pcall(chunk)
  if not ok then error(where .. ": " .. tostring(v), 0) end
  local field, name = unknown_in(v, "")
  if field then fail(where, field, string.format("'%s' is not a value (%s)", name, literal_help)) end
  return v
end

function recipe.load_model(name)
  local text, where = recipe.read_source("models/" .. name .. ".lua")
  if not text then error("unknown model family '" .. name .. "' (" .. where .. ")", 0) end
  local chunk, err = load(text, where, "t", strict_env())
  if not chunk then error(err, 0) end
  return run_chunk(chunk, (where:gsub("^@", "")))
end

local crop_fields = { count = "integer", size = "integer", scale = "table" }

local function check_crops(path, field, c)
  check_type(path, field, c, "table")
  for k, v in pairs(c) do
    local kind = crop_fields[k]
    if not kind then fail(path, field .. "." .. tostring(k), "unknown field") end
    if kind == "integer" then
      if math.type(v) ~= "integer" or v <= 0 then
        fail(path, field .. "." .. k, "expected a positive integer")
      end
    else
      check_type(path, field .. "." .. k, v, kind)
    end
  end
  for k in pairs(crop_fields) do
    if c[k] == nil then fail(path, field .. "." .. k, "missing") end
  end
end

-- Checks a merged ViT model table; returns it with derived fields.
local function check_vit(path, m, defaults)
  for k, v in pairs(m) do
    local d = defaults[k]
    if d == nil then fail(path, "model." .. tostring(k), "unknown field") end
    if type(v) ~= type(d) then
      fail(path, "model." .. k, string.format("expected a %s, got %s", type(d), type(v)))
    end
  end
  check_range(path, "model.width", m.width)
  check_range(path, "model.depth", m.depth)
  for _, k in ipairs({ "patch_size", "head_dim", "mlp_ratio", "in_channels" }) do
    if math.type(m[k]) ~= "integer" or m[k] <= 0 then
      fail(path, "model." .. k, "expected a positive integer")
    end
  end
  for w = m.width[1], m.width[2], m.width[3] do
    if w % m.head_dim ~= 0 then
      fail(path, "model.width", string.format("width %d is not a multiple of head_dim %d", w, m.head_dim))
    end
  end
  if m.drop_path_rate < 0 or m.drop_path_rate >= 1 then
    fail(path, "model.drop_path_rate", "expected 0 <= rate < 1")
  end
  return m
end

-- augment: the multi-crop augmentation (runtime/augment.h). The defaults are the reference's
-- ImageNet pipeline; a recipe for other data sets its own (recipes/fashion_mnist.lua).
recipe.augment_defaults = {
  blur = "reference",          -- "reference": blur 0 / 0.9 / 0.5 (global 1 / global 2 / local),
                               -- what the official code does; "paper": 1.0 / 0.1 / 0.5
  blur_probability = nil,      -- {global 1, global 2, local}: instead of `blur`'s
  sigma = { 0.1, 2.0 },        -- Gaussian blur sigma range (9x9 kernel)
  jitter_probability = 0.8,    -- ColorJitter(brightness, contrast, saturation, hue)
  jitter = { 0.4, 0.4, 0.2, 0.1 },
  grayscale_probability = 0.2,
  solarize_probability = 0.2,  -- the second global crop's
  flip_probability = 0.5,
}

local function check_augment(path, a)
  check_type(path, "augment", a, "table")
  local out = {}
  for k, v in pairs(recipe.augment_defaults) do out[k] = v end
  for k, v in pairs(a) do
    local field = "augment." .. tostring(k)
    if recipe.augment_defaults[k] == nil and k ~= "blur_probability" then fail(path, field, "unknown field") end
    out[k] = v
  end
  if out.blur ~= "reference" and out.blur ~= "paper" then
    fail(path, "augment.blur", "expected \"reference\" (0 / 0.9 / 0.5, what the official code does) "
      .. "or \"paper\" (1.0 / 0.1 / 0.5)")
  end
  out.blur_probability = out.blur_probability or (out.blur == "paper" and { 1.0, 0.1, 0.5 } or { 0.0, 0.9, 0.5 })
  local function probabilities(field, list, n)
    check_type(path, "augment." .. field, list, "table")
    if #list ~= n then fail(path, "augment." .. field, "expected " .. n .. " numbers") end
    for i = 1, n do
      if type(list[i]) ~= "number" or list[i] < 0 or list[i] > 1 then
        fail(path, "augment." .. field .. "[" .. i .. "]", "expected a number in [0, 1]")
      end
    end
  end
  probabilities("blur_probability", out.blur_probability, 3)
  probabilities("jitter", out.jitter, 4)
  for _, field in ipairs({ "jitter_probability", "grayscale_probability", "solarize_probability",
                           "flip_probability" }) do
    local v = out[field]
    if type(v) ~= "number" or v < 0 or v > 1 then fail(path, "augment." .. field, "expected a number in [0, 1]") end
  end
  check_type(path, "augment.sigma", out.sigma, "table")
  if #out.sigma ~= 2 or type(out.sigma[1]) ~= "number" or type(out.sigma[2]) ~= "number"
      or out.sigma[1] <= 0 or out.sigma[1] > out.sigma[2] then
    fail(path, "augment.sigma", "expected {min, max} with 0 < min <= max")
  end
  return out
end

-- find(path) -> path when it names a file; else, for a bare name ("quickstart",
-- "vit_l16_ee1200.lua"), the shipped recipe of that name beside the poa binary running this
-- (package.loaded["poa.install"], runtime/lua_sources.c); else path unchanged.
-- A bare name ("quickstart": no "/" and no ".lua") is a shipped recipe first, so that a file of
-- that name in the working directory (./quickstart, the script) is not taken for it; a path is
-- the file itself, else the shipped recipe of that file name.
local function exists(p)
  local f = io.open(p, "r")
  if f then f:close() end
  return f ~= nil
end

function recipe.find(path)
  local install = package.loaded["poa.install"]
  local bare = not path:find("/") and not path:match("%.lua$")
  if exists(path) and not bare then return path end
  if install and not path:find("/") then
    local file = bare and (path .. ".lua") or path
    for _, dir in ipairs(install.recipe_dirs) do
      if exists(dir .. "/" .. file) then return dir .. "/" .. file end
    end
  end
  return path
end

-- load(path [, overrides]) -> recipe table with `model` merged over its family's defaults and
-- the training sections completed (gen/training.lua); overrides are "section.field=value".
-- The recipe at path as written, with `extends = "NAME"` resolved: NAME (a recipe beside this
-- one, else as recipe.find finds it) gives every section, and this recipe's sections replace
-- its fields one by one (a section that is not a table, like `name`, replaces it whole).
local function load_written(path, depth)
  path = recipe.find(path)
  local chunk, err = loadfile(path, "t", strict_env())
  if not chunk and package.loaded["poa.install"] and not path:find("/") then
    err = err .. " (nor is it a recipe shipped with poa: " .. table.concat(package.loaded["poa.install"].recipe_dirs, ", ")
      .. ")"
  end
  if not chunk then error(err, 0) end
  local r = run_chunk(chunk, path)
  check_type(path, "(recipe)", r, "table")
  if r.extends == nil then return r, path end
  check_type(path, "extends", r.extends, "string")
  if depth >= 8 then fail(path, "extends", "more than 8 recipes deep (a cycle?)") end
  local beside = (path:match("^(.*/)") or "") .. r.extends .. ".lua"
  local ok, base = pcall(load_written, r.extends:find("[/.]") == nil and exists(beside) and beside
                         or r.extends, depth + 1)
  if not ok then fail(path, "extends", base) end
  for k, v in pairs(r) do
    if type(v) == "table" and type(base[k]) == "table" then
      for field, x in pairs(v) do base[k][field] = x end
    elseif k ~= "extends" then
      base[k] = v
    end
  end
  return base, path
end

function recipe.load(path, overrides)
  local r
  r, path = load_written(path, 0)
  local ok3, err3 = pcall(recipe.override, r, overrides)
  if not ok3 then error(path .. ": " .. tostring(err3), 0) end
  check_type(path, "name", r.name, "string")
  check_type(path, "model", r.model, "table")
  check_type(path, "model.family", r.model.family, "string")
  local ok2, defaults = pcall(recipe.load_model, r.model.family)
  if not ok2 then fail(path, "model.family", defaults) end
  local m = {}
  for k, v in pairs(defaults) do m[k] = v end
  for k, v in pairs(r.model) do m[k] = v end
  if m.family == "vit" then check_vit(path, m, defaults) end
  check_crops(path, "global_crops", r.global_crops)
  check_crops(path, "local_crops", r.local_crops)
  if r.global_crops.size % m.patch_size ~= 0 then
    fail(path, "global_crops.size", "not a multiple of model.patch_size")
  end
  if r.local_crops.size % m.patch_size ~= 0 then
    fail(path, "local_crops.size", "not a multiple of model.patch_size")
  end
  for _, field in ipairs({ "global_crops", "local_crops" }) do
    local sc = r[field].scale
    if #sc ~= 2 or type(sc[1]) ~= "number" or type(sc[2]) ~= "number"
        or sc[1] <= 0 or sc[1] > sc[2] or sc[2] > 1 then
      fail(path, field .. ".scale", "expected {min, max} with 0 < min <= max <= 1")
    end
  end
  r.augment = check_augment(path, r.augment or {})
  local known = { name = 1, model = 1, global_crops = 1, local_crops = 1, augment = 1, train = 1,
                  data = 1, heads = 1, loss = 1, optim = 1, teacher = 1, ibot = 1 }
  for k in pairs(r) do
    if not known[k] then fail(path, tostring(k), "unknown field") end
  end
  r.model = m
  r.path = path
  return require("gen.training").complete(path, r)
end

-- ---- command-line overrides ----

local sections = { name = "string", model = "table", global_crops = "table", local_crops = "table",
                   augment = "table" }
for k in pairs(require("gen.training").defaults) do sections[k] = "table" end

-- The Lua type a recipe field takes ("number", "string", "boolean", "table"), or an error
-- naming an unknown section or field.
local function field_type(r, parts)
  local section = parts[1]
  local kind = sections[section]
  if not kind then error(string.format("field '%s': unknown section", section), 0) end
  if #parts == 1 then return kind end
  local field = parts[1] .. "." .. parts[2]
  if #parts > 2 or kind ~= "table" then error(string.format("field '%s': not a section", table.concat(parts, ".", 1, #parts - 1)), 0) end
  local defaults = require("gen.training").defaults[section]
  if section == "global_crops" or section == "local_crops" then
    defaults = { count = 0, size = 0, scale = {} }
  elseif section == "augment" then
    defaults = { blur = "" }
  elseif section == "model" then
    local family = type(r.model) == "table" and r.model.family or nil
    if parts[2] == "family" then return "string" end
    local ok, d = pcall(recipe.load_model, tostring(family))
    if not ok then return nil end -- the recipe's own check names the family
    defaults = d
  end
  if defaults[parts[2]] == nil then error(string.format("field '%s': unknown field", field), 0) end
  return type(defaults[parts[2]])
end

local kind_help = { number = "a number", string = 'a "quoted string" or a bare word',
                    boolean = "true or false", table = "a {table}" }

-- The value of one override's text for a field of type kind: a Lua literal (an expression of
-- literals: 0.1, 1e-3, true, "x", {1, 2}); for a string field, a bare word is the string
-- itself (output=runs/a). Anything else is refused with the field and the text.
local function override_value(field, kind, text)
  local chunk = load("return " .. text, "=" .. field, "t", strict_env())
  local ok, v = false, nil
  if chunk then ok, v = pcall(chunk) end
  if ok and v ~= nil and not unknown_in(v, "") and (kind == nil or type(v) == kind) then return v end
  if kind == "string" then return text end
  local why = (ok and v ~= nil and not unknown_in(v, "")) and ("a " .. type(v)) or "not a Lua literal"
  error(string.format("override %s=%s: field '%s' takes %s; '%s' is %s", field, text, field,
                      kind_help[kind] or "a Lua literal", text, why), 0)
end

-- Applies "section.field=value" overrides to the recipe table r before it is checked.
function recipe.override(r, overrides)
  for _, o in ipairs(overrides or {}) do
    local key, text = o:match("^([%w_%.]+)=(.*)$")
    if not key then error("override '" .. o .. "': expected section.field=value", 0) end
    local parts = {}
    for p in key:gmatch("[^%.]+") do parts[#parts + 1] = p end
    if #parts == 0 then error("override '" .. o .. "': expected section.field=value", 0) end
    local kind = field_type(r, parts)
    local v = override_value(key, kind, text)
    local t = r
    for i = 1, #parts - 1 do
      if t[parts[i]] == nil then t[parts[i]] = {} end
      t = t[parts[i]]
      if type(t) ~= "table" then error("override '" .. o .. "': " .. parts[i] .. " is not a section", 0) end
    end
    t[parts[#parts]] = v
  end
  return r
end

return recipe
