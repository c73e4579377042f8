-- tests/lua/test_plan.lua: gen/plan.lua's arena and launch order of one forward + backward pass.
package.path = "./?.lua;" .. package.path
local check = require("tests.lua.check")
local recipe = require("gen.recipe")
local plan = require("gen.plan")

local vit_l = recipe.load("recipes/vit_l16_ee1200.lua").model
local tiny = recipe.load("tests/recipes/tiny_vit.lua").model

local function by_name(pass)
  local out = {}
  for _, b in ipairs(pass.buffers) do out[b.name] = b end
  return out
end

-- Buffers aligned, inside the arena, disjoint; names unique.
local function check_layout(tag, pass)
  local sorted, seen, ok_align, ok_unique = {}, {}, true, true
  for _, b in ipairs(pass.buffers) do
    sorted[#sorted + 1] = b
    if b.offset % 16 ~= 0 then ok_align = false end
    if seen[b.name] then ok_unique = false end
    seen[b.name] = true
  end
  table.sort(sorted, function(a, b) return a.offset < b.offset end)
  local overlap, inside = nil, true
  for i, b in ipairs(sorted) do
    if b.offset + b.count > pass.total or b.count <= 0 then inside = false end
    local nxt = sorted[i + 1]
    if nxt and b.offset + b.count > nxt.offset then overlap = b.name .. " / " .. nxt.name end
  end
  check.ok(tag .. ": buffers 16-element aligned", ok_align)
  check.ok(tag .. ": buffer names unique", ok_unique)
  check.ok(tag .. ": buffers inside the arena, non-empty", inside)
  check.ok(tag .. ": buffers do not overlap", overlap == nil, overlap)
end

-- Every block id of the member appears, in increasing order forward and decreasing backward;
-- every buffer a step names exists.
local function check_steps(tag, pass, want_ids)
  local names = by_name(pass)
  local order = { forward = {}, backward = {} }
  local missing
  for _, s in ipairs(pass.steps) do
    if s.block then
      local list = order[s.phase]
      if list[#list] ~= s.block then list[#list + 1] = s.block end
    end
    for _, key in ipairs({ "a", "b", "c", "src", "dst" }) do
      local v = s[key]
      if v and not v:match("^param") and not names[v] then missing = v end
    end
    for _, v in ipairs(s.reads or {}) do
      if not v:match("^param") and v ~= "mask" and v ~= "sample_scale" and not names[v] then missing = v end
    end
    for _, v in ipairs(s.writes or {}) do
      if not v:match("^param") and not names[v] then missing = v end
    end
  end
  local want_back = {}
  for i = #want_ids, 1, -1 do want_back[#want_back + 1] = want_ids[i] end
  check.equal(tag .. ": forward visits the block ids in increasing order",
    table.concat(order.forward, " "), table.concat(want_ids, " "))
  check.equal(tag .. ": backward visits them in decreasing order",
    table.concat(order.backward, " "), table.concat(want_back, " "))
  check.ok(tag .. ": every buffer a step names exists", missing == nil, missing)
end

-- ViT-L family member width 640, depth 16, batch 4 of 224 px crops (196 patches, 197 tokens).
do
  local D, depth, B, N, T, F, H = 640, 16, 4, 196, 197, 2560, 10
  local pass = plan.vit_pass(vit_l, D, depth, B, T, N)
  local tag = "plan vit_l 640x16"
  check_layout(tag, pass)
  local b = by_name(pass)
  local rows = B * T
  local want = {
    patches = B * N * 3 * 16 * 16, patch_tokens = B * N * D, pos = T * D,
    ["block0.qkv"] = rows * 3 * D, ["block15.probs"] = B * H * T * T, ["block7.u"] = rows * F,
    g = rows * F, ["block3.ln1_mean"] = rows, ["block3.ln2_rstd"] = rows,
    ["block15.h2"] = rows * D, x_final = rows * D, out = rows * D, norm_rstd = rows,
    ["grad.qkv"] = rows * 3 * D, ["grad.work"] = B * H * T * T, ["grad.u"] = rows * F,
    ["grad.patch_tokens"] = B * N * D, ["grad.pos"] = T * D,
  }
  local bad
  for name, count in pairs(want) do
    if not b[name] or b[name].count ~= count then
      bad = string.format("%s: %s, want %d", name, b[name] and tostring(b[name].count) or "missing", count)
    end
  end
  check.ok(tag .. ": buffer sizes", bad == nil, bad)
  check.equal(tag .. ": no block16 buffers", b["block16.x_in"], nil)
  check.equal(tag .. ": one g for all blocks (the backward recomputes GELU(u))", b["block7.g"], nil)
  local sum = 0
  for _, x in ipairs(pass.buffers) do sum = sum + (x.count + 15) // 16 * 16 end
  check.equal(tag .. ": total is the sum of the aligned sizes", pass.total, sum)
  check_steps(tag, pass, { 0, 1, 3, 4, 6, 7, 9, 10, 12, 13, 15, 16, 18, 19, 21, 23 })
  -- alpha = Dmax / D on the block GEMMs, leading dims of the full weights
  local fc2, qkv1
  for _, s in ipairs(pass.steps) do
    if s.op == "gemm" and s.what == "fc2" and s.block == 9 then fc2 = s end
    if s.op == "gemm" and s.what == "qkv[1]" and s.block == 0 then qkv1 = s end
  end
  check.ok(tag .. ": fc2 GEMM shape and alpha", fc2 and fc2.m == rows and fc2.n == D and fc2.k == F
    and fc2.ldb == 4096 and fc2.alpha == 1024 / 640 and fc2.trans_b == "T")
  check.ok(tag .. ": qkv[1] GEMM writes the k third with the full weight's offset", qkv1
    and qkv1.c_offset == D and qkv1.ldc == 3 * D and qkv1.b_offset == 1024 * 1024 and qkv1.bias_offset == 1024)
end

-- Intact ViT-L, and every depth of the tiny family (block ids per depth), at 16 px local crops.
do
  local pass = plan.vit_pass(vit_l, 1024, 24, 2, 197, 196)
  check_layout("plan vit_l intact", pass)
  local ids = {}
  for i = 0, 23 do ids[#ids + 1] = i end
  check_steps("plan vit_l intact", pass, ids)
  for depth = 2, 4 do
    local p = plan.vit_pass(tiny, 64, depth, 3, 5, 4)
    local tag = "plan tiny 64x" .. depth
    check_layout(tag, p)
    check_steps(tag, p, plan.block_ids(tiny, depth))
  end
  check.equal("plan tiny block ids depth 2", table.concat(plan.block_ids(tiny, 2), " "), "0 3")
  check.equal("plan tiny block ids depth 3", table.concat(plan.block_ids(tiny, 3), " "), "0 1 3")
end

-- gen/space.lua (the elastic space) and gen/plan.lua must agree on the blocks of every depth.
do
  local ok, space = pcall(require, "gen.space")
  if ok and space.block_ids then
    local same = true
    for depth = vit_l.depth[1], vit_l.depth[2] do
      if table.concat(space.block_ids(vit_l, depth), " ") ~= table.concat(plan.block_ids(vit_l, depth), " ") then
        same = false
      end
    end
    check.ok("plan block ids agree with gen/space.lua for every ViT-L depth", same)
  else
    print("SKIP plan block ids vs gen/space.lua: gen/space.lua not present")
  end
end

check.finish()
