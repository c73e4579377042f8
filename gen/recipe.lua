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

function recipe.load_model(name)
  local text, where = recipe.read_source("models/" .. name .. ".lua")
  if not text then error("unknown model family '" .. name .. "' (" .. where .. ")", 0) end
  local chunk, err = load(text, where, "t", {})
  if not chunk then error(err, 0) end
  return chunk()
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

-- find(path) -> path when it names a file; else, for a bare name ("quickstart",
-- "vit_l16_ee1200.lua"), the shipped recipe of that name beside the poa binary running this
-- (package.loaded["poa.install"], runtime/lua_sources.c); else path unchanged.
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

function recipe.find(path)
  local f = io.open(path, "r")
  if f then f:close() return path end
  local install = package.loaded["poa.install"]
  if not install or path:find("/") then return path end
  local file = path:match("%.lua$") and path or (path .. ".lua")
  for _, dir in ipairs(install.recipe_dirs) do
    local g = io.open(dir .. "/" .. file, "r")
    if g then g:close() return dir .. "/" .. file end
  end
  return path
end

-- load(path [, overrides]) -> recipe table with `model` merged over its family's defaults and
-- the training sections completed (gen/training.lua); overrides are "section.field=value".
function recipe.load(path, overrides)
  path = recipe.find(path)
  local chunk, err = loadfile(path, "t", {})
  if not chunk and package.loaded["poa.install"] and not path:find("/") then
    err = err .. " (nor is it a recipe shipped with poa: " .. table.concat(package.loaded["poa.install"].recipe_dirs, ", ")
      .. ")"
  end
  if not chunk then error(err, 0) end
  local ok, r = pcall(chunk)
  if not ok then error(path .. ": " .. tostring(r), 0) end
  check_type(path, "(recipe)", r, "table")
  local ok3, err3 = pcall(require("gen.training").override, r, overrides)
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
                  data = 1, heads = 1, loss = 1, optim = 1, teacher = 1, ibot = 1, eval = 1 }
  for k in pairs(r) do
    if not known[k] then fail(path, tostring(k), "unknown field") end
  end
  r.model = m
  r.path = path
  return require("gen.training").complete(path, r)
end

return recipe
