-- tests/lua/test_space.lua: the elastic space (gen/space.lua) against the reference
-- (poa-vit-and-training.md §1.4, §1.8, §3.2) and PyTorch counts (tests/golden/fixtures).
package.path = "./?.lua;" .. package.path
local check = require("tests.lua.check")
local recipe = require("gen.recipe")
local space = require("gen.space")

local function join(list) return table.concat(list, " ") end

local function range(a, b)
  local out = {}
  for i = a, b do out[#out + 1] = i end
  return out
end

-- The ViT-L family -------------------------------------------------------------------------
local r = recipe.load("recipes/vit_l16_ee1200.lua")
local model = r.model
local members = space.members(r)
check.equal("vit_l members", #members, 143)
check.equal("vit_l widths", join(space.widths(model)),
  "384 448 512 576 640 704 768 832 896 960 1024")
check.equal("vit_l depths", join(space.depths(model)), join(range(12, 24)))

-- Width-major ascending order, heads and MLP hidden as reference §1.8.
do
  local ok, why = true, nil
  local i = 0
  for w = 384, 1024, 64 do
    for d = 12, 24 do
      i = i + 1
      local m = members[i]
      if m.width ~= w or m.depth ~= d or m.heads ~= w // 64 or m.hidden ~= 4 * w then
        ok, why = false, string.format("member %d is %dx%d heads %d hidden %d", i,
          m.width, m.depth, m.heads, m.hidden)
        break
      end
    end
  end
  check.ok("vit_l member order, heads, hidden", ok, why)
end

-- Replica table, reference §3.2, rows width 384..1024, columns depth 12..24 (intact last = 1).
local want_replicas = {
  { 9, 8, 8, 8, 7, 7, 6, 6, 5, 4, 4, 4, 3 },
  { 8, 8, 7, 7, 7, 6, 6, 5, 5, 4, 4, 3, 3 },
  { 8, 7, 7, 6, 6, 6, 5, 5, 4, 4, 3, 3, 3 },
  { 7, 7, 6, 6, 6, 5, 5, 4, 4, 4, 3, 3, 2 },
  { 7, 6, 6, 6, 5, 5, 4, 4, 4, 3, 3, 3, 2 },
  { 6, 6, 5, 5, 5, 4, 4, 4, 3, 3, 3, 2, 2 },
  { 5, 5, 5, 4, 4, 4, 4, 3, 3, 3, 2, 2, 2 },
  { 5, 5, 4, 4, 4, 3, 3, 3, 3, 2, 2, 2, 2 },
  { 4, 4, 4, 4, 3, 3, 3, 3, 2, 2, 2, 2, 1 },
  { 4, 3, 3, 3, 3, 3, 2, 2, 2, 2, 2, 1, 1 },
  { 3, 3, 3, 2, 2, 2, 2, 2, 2, 2, 1, 1, 1 },
}
local rep = space.replicas(model)
do
  local bad = {}
  local rows, cols = {}, {}
  for i, w in ipairs(space.widths(model)) do
    rows[i] = 0
    for j, d in ipairs(space.depths(model)) do
      local got = rep.count[w][d]
      if got ~= want_replicas[i][j] then
        bad[#bad + 1] = string.format("(%d, %d) got %s want %d", w, d, tostring(got),
          want_replicas[i][j])
      end
      rows[i] = rows[i] + got
      cols[j] = (cols[j] or 0) + got
    end
  end
  check.ok("vit_l replica table cell by cell", #bad == 0, table.concat(bad, "; "))
  check.equal("vit_l replica row sums", join(rows), "79 73 67 62 58 52 46 42 37 31 26")
  check.equal("vit_l replica column sums", join(cols), "66 62 58 55 52 48 44 41 37 33 29 26 22")
end
check.equal("vit_l elastic total", rep.elastic_total, 572)
check.equal("vit_l replicated list length", rep.total, 573)
check.equal("vit_l intact count", rep.count[1024][24], 1)
do
  local last = rep.list[#rep.list]
  check.ok("vit_l replicated list ends with the intact", last.width == 1024 and last.depth == 24)
  local ok = true
  for _, s in ipairs(rep.slots) do
    if s.width == 1024 and s.depth == 24 then ok = false end
  end
  check.ok("vit_l elastic slots exclude the intact", ok)
  -- The list is width ascending, then depth ascending; count each (w, d) run.
  local sorted, runs = true, {}
  for i, s in ipairs(rep.list) do
    local key = s.width * 100 + s.depth
    if i > 1 then
      local p = rep.list[i - 1]
      if key < p.width * 100 + p.depth then sorted = false end
    end
    runs[key] = (runs[key] or 0) + 1
  end
  local counts_ok = true
  for w, row in pairs(rep.count) do
    for d, n in pairs(row) do
      if (runs[w * 100 + d] or 0) ~= n then counts_ok = false end
    end
  end
  check.ok("vit_l replicated list order and multiplicities", sorted and counts_ok)
end
do
  local sum, s, b, intact = 0, nil, nil, nil
  for _, m in ipairs(members) do
    sum = sum + m.probability
    if m.width == 384 and m.depth == 12 then s = m end
    if m.width == 768 and m.depth == 12 then b = m end
    if m.intact then intact = m end
  end
  check.ok("vit_l probabilities sum to 1", math.abs(sum - 1) < 1e-12, tostring(sum))
  check.equal("vit_l ViT-S probability 9/572", s.probability, 9 / 572)
  check.equal("vit_l ViT-B probability 5/572", b.probability, 5 / 572)
  check.ok("vit_l single intact member (1024, 24), probability 0",
    intact and intact.width == 1024 and intact.depth == 24 and intact.probability == 0)
  check.equal("vit_l names", join({ s.name, b.name, intact.name }), "ViT-S ViT-B ViT-L")
end

-- NumPy arithmetic: linspace(3, 1, 11) and the half-even rounding of exact .5 products.
do
  local ws = space.linspace(3, 1, 11)
  check.ok("linspace(3, 1, 11) endpoints", ws[1] == 3.0 and ws[11] == 1.0)
  check.equal("linspace(3, 1, 11)[5] as NumPy", string.format("%.17g", ws[5]), "2.2000000000000002")
  check.equal("round_half_even 8.5", space.round_half_even(8.5), 8)
  check.equal("round_half_even 7.5", space.round_half_even(7.5), 8)
  check.equal("round_half_even 2.5", space.round_half_even(2.5), 2)
  check.equal("round_half_even 3.5000000000000004", space.round_half_even(3.5000000000000004), 4)
  check.equal("round_half_even 2.4999999999999996", space.round_half_even(2.4999999999999996), 2)
end

-- Block ids, reference §1.4.
local want_blocks = {
  [12] = "0 2 4 6 8 10 12 14 16 18 20 23",
  [13] = "0 1 3 5 7 9 11 13 15 17 19 21 23",
  [14] = "0 1 3 5 7 8 10 12 14 15 17 19 21 23",
  [15] = "0 1 3 4 6 8 9 11 13 14 16 18 19 21 23",
  [16] = "0 1 3 4 6 7 9 10 12 13 15 16 18 19 21 23",
  [17] = "0 1 2 4 5 7 8 10 11 12 14 15 17 18 20 21 23",
  [18] = "0 1 2 4 5 6 8 9 10 12 13 14 16 17 18 20 21 23",
  [19] = "0 1 2 3 5 6 7 8 10 11 12 14 15 16 17 19 20 21 23",
  [20] = "0 1 2 3 4 6 7 8 9 10 12 13 14 15 16 18 19 20 21 23",
  [21] = "0 1 2 3 4 5 6 8 9 10 11 12 13 14 16 17 18 19 20 21 23",
  [22] = "0 1 2 3 4 5 6 7 8 9 10 12 13 14 15 16 17 18 19 20 21 23",
  [23] = "0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 23",
  [24] = join(range(0, 23)),
}
for depth = 12, 24 do
  check.equal("vit_l block ids L=" .. depth, join(space.block_ids(model, depth)), want_blocks[depth])
  check.equal("vit_l Eq. 4 block ids L=" .. depth,
    join(space.block_ids_eq4(model, depth)), want_blocks[depth])
end
check.equal("block ids L=1", join(space.block_ids(model, 1)), "0")
do
  -- Eq. 4 (integers) and the official truncated float linspace agree for every Lmax <= 30;
  -- at Lmax = 31, L = 23, j = 11 they part: 330/22 = 15 exactly, but NumPy's
  -- linspace(0, 30, 23)[11] = 14.999999999999998 (checked with NumPy) truncates to 14.
  local first = nil
  for lmax = 2, 31 do
    for depth = 2, lmax do
      local m = { depth = { 1, lmax, 1 } }
      local a, b = space.block_ids_eq4(m, depth), space.block_ids(m, depth)
      if join(a) ~= join(b) and not first then first = string.format("%d %d", lmax, depth) end
    end
  end
  check.equal("Eq. 4 equals linspace up to Lmax 30, first difference", first, "31 23")
  check.equal("linspace(0, 30, 23)[11] truncated", space.block_ids({ depth = { 1, 31, 1 } }, 23)[12], 14)
end

-- Parameter counts and MACs against PyTorch (tests/golden/vit_param_counts.py).
local function read_fixture(path)
  local f = assert(io.open(path, "r"))
  local text = f:read("a")
  f:close()
  local out = {}
  for obj in text:match('"members"%s*:%s*(%b[])'):gmatch("%b{}") do
    out[#out + 1] = {
      name = obj:match('"name"%s*:%s*"([^"]*)"'),
      width = math.tointeger(tonumber(obj:match('"width"%s*:%s*(%d+)'))),
      depth = math.tointeger(tonumber(obj:match('"depth"%s*:%s*(%d+)'))),
      params = math.tointeger(tonumber(obj:match('"params"%s*:%s*(%d+)'))),
      macs = math.tointeger(tonumber(obj:match('"macs"%s*:%s*(%d+)'))),
    }
  end
  return out, math.tointeger(tonumber(text:match('"image_size"%s*:%s*(%d+)')))
end
local golden, golden_size = read_fixture("tests/golden/fixtures/vit_param_counts.json")
check.equal("fixture members", #golden, 3)
for _, g in ipairs(golden) do
  check.equal(g.name .. " params = PyTorch", space.params(model, g.width, g.depth, golden_size), g.params)
  local gflops, macs = space.flops(model, g.width, g.depth, golden_size)
  check.equal(g.name .. " MACs = PyTorch profiler", macs, g.macs)
  check.equal(g.name .. " gflops = macs / 1e9", gflops, g.macs / 1e9)
end
-- The reference §1.1: backbone ViT-L ~ 303.4 M. The paper prints no GFLOPs; the usual
-- fvcore / DeiT figure for ViT-S/16 at 224 px is 4.6 GFLOPs (tolerance 0.05).
check.equal("ViT-L params ~ 303.4 M (reference §1.1)",
  string.format("%.1f", space.params(model, 1024, 24, 224) / 1e6), "303.4")
check.ok("ViT-S ~ 4.6 GFLOPs at 224", math.abs(space.flops(model, 384, 12, 224) - 4.6) < 0.05)
do
  local m = {}
  for k, v in pairs(model) do m[k] = v end
  m.layerscale, m.qkv_bias = 0, false
  check.equal("params without LayerScale and qkv bias",
    space.params(model, 384, 12, 224) - space.params(m, 384, 12, 224), 12 * (2 * 384 + 3 * 384))
  check.equal("pos_embed rows follow the image size",
    space.params(model, 384, 12, 96) - space.params(model, 384, 12, 224), (36 - 196) * 384)
end
check.ok("params rejects a width outside the family",
  not pcall(space.params, model, 400, 12, 224))
check.ok("flops rejects an image size not a multiple of the patch",
  not pcall(space.flops, model, 384, 12, 100))

-- list_text.
do
  local text = space.list_text(r)
  local lines = {}
  for line in text:gmatch("[^\n]+") do lines[#lines + 1] = line end
  check.ok("list header", lines[1]:find("vit_l16_ee1200", 1, true) and lines[1]:find("143 members")
    and lines[1]:find("11 kernel sets") and lines[1]:find("572 elastic slots"), lines[1])
  local rows, width_ok = 0, true
  local row_len = nil
  for _, line in ipairs(lines) do
    if line:match("^%s+%d+%s+%d+%s+%d+") then
      rows = rows + 1
      local bare = #(line:gsub("%s+ViT%-[SBL]$", ""))
      row_len = row_len or bare
      if bare ~= row_len then width_ok = false end
    end
  end
  check.equal("list rows", rows, 143)
  check.ok("list columns aligned", width_ok)
  check.ok("list ViT-S row", text:find("\n%s+384%s+12%s+6%s+21%.68%s+4%.60%s+9%s+1%.573%s+ViT%-S\n") ~= nil)
  check.ok("list ViT-L row is the intact", text:find("\n%s+1024%s+24%s+16%s+303%.35%s+61%.55%s+1%s+intact%s+ViT%-L\n") ~= nil)
end

-- The tiny family ------------------------------------------------------------------------
do
  local t = recipe.load("tests/recipes/tiny_vit.lua")
  local tm = space.members(t)
  check.equal("tiny members", #tm, 9)
  check.equal("tiny widths", join(space.widths(t.model)), "32 64 96")
  check.equal("tiny block ids L=2", join(space.block_ids(t.model, 2)), "0 3")
  check.equal("tiny block ids L=3", join(space.block_ids(t.model, 3)), "0 1 3")
  check.equal("tiny block ids L=4", join(space.block_ids(t.model, 4)), "0 1 2 3")
  local tr = space.replicas(t.model)
  -- ws = ds = linspace(3, 1, 3) = {3, 2, 1}: products 9 6 3 / 6 4 2 / 3 2 1.
  local got = {}
  for _, w in ipairs({ 32, 64, 96 }) do
    for _, d in ipairs({ 2, 3, 4 }) do got[#got + 1] = tr.count[w][d] end
  end
  check.equal("tiny replicas", join(got), "9 6 3 6 4 2 3 2 1")
  check.equal("tiny elastic total", tr.elastic_total, 35)
  -- Hand count for width 32, depth 2, 32 px (16 patches), patch 8, hidden 128:
  -- embed 32*3*64+32 + 32 + 17*32 + 32 = 6784; block 64 + (3*32*32+96) + 1056 + 32 + 64
  -- + 4224 + 4128 + 32 = 12768; final norm 64 -> 6784 + 2*12768 + 64 = 32384.
  check.equal("tiny params 32x2", space.params(t.model, 32, 2, 32), 32384)
  check.ok("tiny has no named members", tm[1].name == nil)
end

-- Bad recipes: errors name the field ------------------------------------------------------
local function bad_recipe(label, model_fields, want)
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  f:write("return { name = 'bad', model = { family = 'vit', " .. model_fields .. " },\n"
    .. "  global_crops = { count = 2, size = 224, scale = { 0.32, 1.0 } },\n"
    .. "  local_crops = { count = 8, size = 96, scale = { 0.05, 0.32 } } }\n")
  f:close()
  local ok, err = pcall(recipe.load, path)
  os.remove(path)
  check.ok("bad recipe: " .. label, not ok and tostring(err):find(want, 1, true)
    and tostring(err):find(path, 1, true), tostring(err))
end
bad_recipe("unknown model field", "widht = { 384, 1024, 64 }", "model.widht")
bad_recipe("width not a multiple of head_dim", "width = { 384, 1024, 32 }", "model.width")

-- extends: the base recipe's sections, this recipe's fields replacing theirs one by one
do
  local q, fm = recipe.load("recipes/quickstart.lua"), recipe.load("recipes/fashion_mnist.lua")
  check.ok("extends: fields given replace the base's", fm.name == "fashion_mnist"
    and fm.model.width[2] == 96 and fm.loss.lambda == 0.5 and fm.teacher.momentum == 0.99
    and fm.optim.epochs == 120 and fm.train.output == "out/fashion_mnist")
  check.ok("extends: fields not given are the base's", fm.model.depth[2] == q.model.depth[2]
    and fm.model.layerscale == q.model.layerscale and fm.heads.prototypes[1] == q.heads.prototypes[1]
    and fm.teacher.temp == q.teacher.temp and fm.optim.base_lr == q.optim.base_lr
    and fm.local_crops.count == q.local_crops.count and fm.train.batch_size == q.train.batch_size)
  local function extends(base, want)
    local path = os.tmpname()
    local f = assert(io.open(path, "w"))
    f:write("return { extends = " .. base .. ", name = 'x' }\n")
    f:close()
    local ok, err = pcall(recipe.load, path)
    os.remove(path)
    check.ok("extends " .. base .. ": refused naming the field", not ok
      and tostring(err):find("extends", 1, true) and tostring(err):find(want, 1, true), tostring(err))
  end
  extends("'no_such_recipe'", "no_such_recipe")
  extends("3", "string")
end

check.finish()
