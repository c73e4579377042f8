-- gen/space.lua: the elastic space of an architecture family: every (width, depth) member,
-- the blocks each depth runs, the sampling replicas, parameter counts and FLOPs.
-- Input is a recipe as require("gen.recipe").load(path) returns it (r.model merged and checked).
-- Reference: poa-vit-and-training.md §1.1 (parameters), §1.4 (block ids), §1.8 (members),
-- §3.2 (replica counts), paper Eq. 4 and Eq. 14.
--
-- FLOP convention (space.flops): multiply-accumulates of the forward pass of one image, counted
-- as 1 FLOP per MAC, the fvcore / DeiT convention behind "ViT-S/16 at 224 px = 4.6 GFLOPs".
-- Counted: the patch-embed convolution, the qkv / proj / fc1 / fc2 GEMMs, and the two attention
-- matmuls (q k^T and attn v). Left out, as fvcore's GEMM-only count does: bias adds, LayerNorm,
-- softmax, GELU, LayerScale, residual adds, the pos-embed add and the alpha scaling. Per block
-- these are O(tokens x width) or O(heads x tokens^2) elementwise operations against
-- O(tokens x width^2) for the GEMMs. The paper itself prints no GFLOPs; the counts are checked
-- against PyTorch's profiler (tests/golden/vit_param_counts.py).
local space = {}

-- Ascending list min, min+step, ..., max of a {min, max, step} range.
local function range_list(r)
  local out = {}
  for v = r[1], r[2], r[3] do out[#out + 1] = v end
  return out
end

function space.widths(model) return range_list(model.width) end
function space.depths(model) return range_list(model.depth) end

-- numpy.linspace(start, stop, num) in float64, computed as NumPy does:
-- y_i = i * step + start with step = (stop - start) / (num - 1), and the last element set
-- exactly to stop. num = 1 gives {start}.
function space.linspace(start, stop, num)
  start, stop = start + 0.0, stop + 0.0
  if num == 1 then return { start } end
  local step = (stop - start) / (num - 1)
  local y = {}
  for i = 0, num - 1 do y[i + 1] = i * step + start end
  y[num] = stop
  return y
end

-- Round half to even (NumPy's round and Python 3's round on a float).
function space.round_half_even(x)
  local f = math.floor(x)
  local d = x - f
  local n = math.tointeger(f)
  if d > 0.5 then return n + 1 end
  if d < 0.5 then return n end
  return (n % 2 == 0) and n or n + 1
end

-- 0-based ids of the intact blocks a depth-L member runs, as the official get_block_idx:
-- int(numpy.linspace(0, Lmax-1, L)), truncated (DESIGN: match the official code). For every
-- Lmax <= 30 this equals the paper's Eq. 4, floor((Lmax-1) j / (L-1)) (space.block_ids_eq4);
-- from Lmax = 31 on, float rounding makes a few ids differ (tests/lua/test_space.lua).
function space.block_ids(model, depth)
  local lmax = model.depth[2]
  if math.type(depth) ~= "integer" or depth < 1 or depth > lmax then
    error(string.format("space.block_ids: depth %s is not in 1..%d", tostring(depth), lmax), 2)
  end
  local ids = {}
  for i, v in ipairs(space.linspace(0, lmax - 1, depth)) do
    ids[i] = math.tointeger(math.floor(v))
  end
  return ids
end

-- The paper's Eq. 4 in integers, for comparison.
function space.block_ids_eq4(model, depth)
  local lmax = model.depth[2]
  if depth == 1 then return { 0 } end
  local ids = {}
  for j = 0, depth - 1 do ids[j + 1] = ((lmax - 1) * j) // (depth - 1) end
  return ids
end

-- Replica counts of the sampling list (reference §3.2, paper Eq. 14 rounded):
-- count(i, j) = round_half_even(ws_i * ds_j), ws = linspace(S, 1, #widths),
-- ds = linspace(S, 1, #depths), S = model.net_select_scale, products in float64.
-- Returns {
--   count = {[width] = {[depth] = n}},
--   list = the replicated list as the official code builds it: width ascending, depth
--          ascending, each {width, depth} repeated count times; the intact is its last entry,
--   slots = the elastic draw slots: list without the intact (ids 0 .. elastic_total-1),
--   elastic_total = #slots, total = #list, intact = {width, depth} }.
-- The intact (max width, max depth) has ws * ds = 1 * 1 = 1 copy whenever both lists have more
-- than one value. It is never an elastic draw: all its copies are left out of `slots`.
function space.replicas(model)
  local widths, depths = space.widths(model), space.depths(model)
  local scale = model.net_select_scale
  local ws = space.linspace(scale, 1, #widths)
  local ds = space.linspace(scale, 1, #depths)
  local iw, id = widths[#widths], depths[#depths]
  local out = { count = {}, list = {}, slots = {}, intact = { width = iw, depth = id } }
  for i, w in ipairs(widths) do
    out.count[w] = {}
    for j, d in ipairs(depths) do
      local n = space.round_half_even(ws[i] * ds[j])
      out.count[w][d] = n
      local intact = (w == iw and d == id)
      for _ = 1, n do
        out.list[#out.list + 1] = { width = w, depth = d }
        if not intact then out.slots[#out.slots + 1] = { width = w, depth = d } end
      end
    end
  end
  out.total, out.elastic_total = #out.list, #out.slots
  return out
end

local function check_member(model, width, depth, where)
  local lo, hi, step = model.width[1], model.width[2], model.width[3]
  if math.type(width) ~= "integer" or width < lo or width > hi or (width - lo) % step ~= 0 then
    error(string.format("%s: width %s is not in the family (%d..%d step %d)",
      where, tostring(width), lo, hi, step), 3)
  end
  if math.type(depth) ~= "integer" or depth < model.depth[1] or depth > model.depth[2] then
    error(string.format("%s: depth %s is not in the family (%d..%d)",
      where, tostring(depth), model.depth[1], model.depth[2]), 3)
  end
end

local function tokens_of(model, image_size, where)
  if math.type(image_size) ~= "integer" or image_size % model.patch_size ~= 0 then
    error(string.format("%s: image_size %s is not a multiple of patch_size %d",
      where, tostring(image_size), model.patch_size), 3)
  end
  local side = image_size // model.patch_size
  return side * side
end

-- Backbone parameter count of member (width, depth), as the standalone exported network has
-- it (reference §1.1 sliced to width): patch-embed conv weight + bias, cls_token, pos_embed with
-- 1 + (image_size / patch)^2 rows (image_size = the global crop size the pos_embed table is built
-- for), mask_token, per block norm1, qkv (+bias), proj (+bias), ls1, norm2, fc1 (+bias),
-- fc2 (+bias), ls2, and the final norm. LayerScale gammas only when model.layerscale ~= 0.
function space.params(model, width, depth, image_size)
  check_member(model, width, depth, "space.params")
  local patches = tokens_of(model, image_size, "space.params")
  local d, hidden = width, model.mlp_ratio * width
  local function bias(flag, n) return flag and n or 0 end
  local ls = (model.layerscale ~= 0) and d or 0
  local embed = d * model.in_channels * model.patch_size * model.patch_size + d
    + d                       -- cls_token
    + (1 + patches) * d       -- pos_embed
    + d                       -- mask_token
  local block = 2 * d                                -- norm1
    + 3 * d * d + bias(model.qkv_bias, 3 * d)        -- qkv
    + d * d + bias(model.proj_bias, d)               -- proj
    + ls                                             -- ls1
    + 2 * d                                          -- norm2
    + d * hidden + bias(model.ffn_bias, hidden)      -- fc1
    + hidden * d + bias(model.ffn_bias, d)           -- fc2
    + ls                                             -- ls2
  return embed + depth * block + 2 * d               -- final norm
end

-- Forward multiply-accumulates of one image of image_size x image_size through member
-- (width, depth), in GFLOPs (1 MAC = 1 FLOP; see the convention at the top of this file).
-- Second result: the exact MAC count as an integer.
function space.flops(model, width, depth, image_size)
  check_member(model, width, depth, "space.flops")
  local patches = tokens_of(model, image_size, "space.flops")
  local n, d, hidden = 1 + patches, width, model.mlp_ratio * width
  local embed = patches * d * model.in_channels * model.patch_size * model.patch_size
  local block = n * d * 3 * d      -- qkv
    + n * n * d                    -- q k^T over all heads
    + n * n * d                    -- attn v
    + n * d * d                    -- proj
    + n * d * hidden               -- fc1
    + n * hidden * d               -- fc2
  local macs = embed + depth * block
  return macs / 1e9, macs
end

local function name_of(model, width, depth)
  for _, nm in ipairs(model.named or {}) do
    if nm.width == width and nm.depth == depth then return nm.name end
  end
  return nil
end

-- Every member of the family, width-major ascending then depth ascending:
-- {width, depth, heads, hidden, params, gflops (one image at the global crop size), replicas,
--  probability (replicas / elastic total; 0 for the intact, which is never an elastic draw),
--  name (from model.named) or nil, intact (bool), block_ids}.
function space.members(r)
  local model = r.model
  local size = r.global_crops.size
  local rep = space.replicas(model)
  local out = {}
  for _, w in ipairs(space.widths(model)) do
    for _, d in ipairs(space.depths(model)) do
      local intact = (w == rep.intact.width and d == rep.intact.depth)
      local n = rep.count[w][d]
      out[#out + 1] = {
        width = w, depth = d,
        heads = w // model.head_dim,
        hidden = model.mlp_ratio * w,
        params = space.params(model, w, d, size),
        gflops = space.flops(model, w, d, size),
        replicas = n,
        probability = (intact or rep.elastic_total == 0) and 0 or n / rep.elastic_total,
        name = name_of(model, w, d),
        intact = intact,
        block_ids = space.block_ids(model, d),
      }
    end
  end
  return out
end

-- The text `poa list <recipe>` prints: a header, then one aligned row per member.
function space.list_text(r)
  local members = space.members(r)
  local rep = space.replicas(r.model)
  local lines = {}
  lines[1] = string.format("%s: %d members, %d kernel sets (distinct widths), %d elastic slots",
    r.name, #members, #space.widths(r.model), rep.elastic_total)
  lines[2] = string.format("%6s %6s %6s %11s %9s %8s %9s  %s",
    "width", "depth", "heads", "params (M)", "GFLOPs", "replicas", "p (%)", "name")
  for _, m in ipairs(members) do
    local p = m.intact and "intact" or string.format("%.3f", 100 * m.probability)
    local name = m.name or ""
    lines[#lines + 1] = string.format("%6d %6d %6d %11.2f %9.2f %8d %9s  %s",
      m.width, m.depth, m.heads, m.params / 1e6, m.gflops, m.replicas, p, name):gsub("%s+$", "")
  end
  lines[#lines + 1] = string.format("(GFLOPs: forward multiply-accumulates of one %dx%d image, "
    .. "1 MAC = 1 FLOP)", r.global_crops.size, r.global_crops.size)
  return table.concat(lines, "\n") .. "\n"
end

-- Parses a member of recipe r from text: "WxD" (640x16), "W_D" (640_16, the reference's form),
-- or a name of model.named ("ViT-S"), also without its prefix ("S") or as the reference's
-- small/base/large. Returns width, depth, or raises an error that names the family's range.
local long_names = { small = "S", base = "B", large = "L", huge = "H" }
function space.parse_member(r, text)
  local model = r.model
  local w, d = text:match("^(%d+)[x_](%d+)$")
  local width, depth = tonumber(w), tonumber(d)
  if not width then
    local key = (long_names[text:lower()] or text):lower()
    for _, nm in ipairs(model.named or {}) do
      local n = nm.name:lower()
      if n == key or n:match("%-(.*)$") == key then width, depth = nm.width, nm.depth end
    end
  end
  local ok = width and depth and width >= model.width[1] and width <= model.width[2]
    and (width - model.width[1]) % model.width[3] == 0
    and depth >= model.depth[1] and depth <= model.depth[2]
    and (depth - model.depth[1]) % model.depth[3] == 0
  if not ok then
    local names = {}
    for _, nm in ipairs(model.named or {}) do names[#names + 1] = nm.name end
    error(string.format("unknown sub-network '%s' in %s: widths %d..%d step %d, depths %d..%d step %d%s",
      text, r.name, model.width[1], model.width[2], model.width[3], model.depth[1],
      model.depth[2], model.depth[3],
      #names > 0 and (", or one of " .. table.concat(names, ", ")) or ""), 0)
  end
  return width, depth
end

return space
