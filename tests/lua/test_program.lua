-- tests/lua/test_program.lua: the forward programs gen/program.lua lowers models/vit.lua's graph
-- to. For members of every shipped ViT recipe and both crops:
--   - the arena is sound: values live at the same step never share an element, at batches 1, 3
--     and 64, offsets are multiples of 16 and inside the arena;
--   - every activation is written before it is read, kernels never write parameters or inputs;
--   - the arena is the best a placement can do here: no larger than the most live at one step;
--   - the GEMM and attention FLOPs at the native size equal gen/space.lua's count (an
--     independent formula): the program runs every layer of the member once;
--   - the parameters it reads are exactly the member's blocks (gen/space.lua's block ids).
-- And the backward programs gen/backward.lua derives from them: the same arena checks; every
-- cotangent written before it is read; the only forward values written are the recomputed
-- ones (GELU's g, the LayerNorms' y: three per block); a gradient for every parameter the
-- forward reads and for no other; FLOPs twice the forward's less the patch embedding's dx. (That the gradients are right: tests/c/test_vit_golden.c
-- against PyTorch and tests/c/f64_vit_gradcheck.c, both through the executor.) The GPU
-- programs (gen/schedule.lua) against the CPU's (check_gpu), and for every width of every
-- shipped family their launches (launches_sound); the launch geometry of one member pinned.
package.path = "./?.lua;" .. package.path
local check = require("tests.lua.check")
local program = require("gen.program")
local graph = require("gen.graph")
local recipe = require("gen.recipe")
local space = require("gen.space")
local emit = require("gen.emit")
local template = require("gen.template")
local lower_cuda = require("gen.lower_cuda")

-- The values step st writes (a set of ids) and the operands it reads (a list).
local function written_and_read(st)
  if st.kind == "gemm" then return { [st.c.value] = true }, { st.a, st.b, st.bias } end
  if st.kind == "copy" then return { [st.dst.value] = true }, { st.src } end
  local out, list = {}, {}
  for i, a in ipairs(st.args) do
    if a.buffer and graph.kernel_params(st.kernel)[i][2] == "out" then out[a.buffer.value] = true
    elseif a.buffer then list[#list + 1] = a.buffer end
  end
  return out, list
end

local function arena_sound(p)
  local acts = {}
  for _, v in ipairs(p.values) do if v.kind == "act" then acts[#acts + 1] = v end end
  for _, batch in ipairs({ 1, 3, 64 }) do
    local arena = program.eval(p.arena, batch)
    for i, a in ipairs(acts) do
      local ao, an = program.eval(a.offset, batch), program.eval(a.size, batch)
      if ao % 16 ~= 0 or ao < 0 or ao + an > arena then return false, a.name .. " outside the arena or unaligned" end
      for j = i + 1, #acts do
        local b = acts[j]
        local bo, bn = program.eval(b.offset, batch), program.eval(b.size, batch)
        if a.first <= b.last and b.first <= a.last and ao < bo + bn and bo < ao + an then
          return false, string.format("%s and %s overlap while both live (batch %d)", a.name, b.name, batch)
        end
      end
    end
  end
  return true
end

-- Cotangents (the backward) and activations written before read; a bf16 cast slot (GPU
-- programs) read by the first GEMM after it is written, and by no other; the forward writes only
-- activations and casts, the backward also gradients, and a forward value only in a recompute
-- step. Returns the number of recompute runs (a run: consecutive steps with one note).
local function dataflow_sound(p, backward)
  local defined, runs, last, fresh = {}, 0, nil, {}
  for i, st in ipairs(p.steps) do
    local out, list = written_and_read(st)
    for _, o in ipairs(list) do
      local v = p.values[o.value]
      if v.kind == "act" and not defined[o.value] then
        return false, string.format("step %d reads %s before it is written", i, v.name)
      end
      if v.kind == "cast" and not fresh[o.value] then return false, string.format("step %d reads %s not cast for it", i, v.name) end
    end
    if st.kind == "gemm" then fresh = {} end
    for id in pairs(out) do
      local kind = p.values[id].kind
      if not (kind == "act" or kind == "cast" or (backward and (kind == "grad" or (kind == "saved" and st.note)))) then
        return false, string.format("step %d writes %s %s", i, kind, p.values[id].name)
      end
      defined[id], fresh[id] = true, kind == "cast" or nil
    end
    if st.note and st.note ~= last then runs = runs + 1 end
    last = st.note
  end
  return true, runs
end

-- The names of p's values of a kind, sorted, as one string.
local function names_of(p, kind)
  local list = {}
  for _, v in ipairs(p.values) do if v.kind == kind then list[#list + 1] = v.name end end
  table.sort(list)
  return table.concat(list, " ")
end

-- The state-dict names the program reads, against the member's blocks.
local function params_match(p, r, width, depth)
  local want = {}
  for _, id in ipairs(space.block_ids(r.model, depth)) do want["blocks." .. id] = true end
  for _, v in ipairs(p.values) do
    if v.kind == "param" then
      local block = v.name:match("^(blocks%.%d+)%.")
      if block and not want[block] then return false, v.name .. " is not a block of the member" end
      if block then want[block] = "seen" end
    end
  end
  for b, seen in pairs(want) do if seen ~= "seen" then return false, b .. " is never read" end end
  return true
end

-- The checks every pair of forward and backward programs passes, CPU or GPU.
local function check_pair(name, p, b, r, width, depth)
  for _, x in ipairs({ { name, p }, { name .. " backward:", b } }) do
    local arena, live = program.eval(x[2].arena, 4), program.max_live(x[2], 4)
    check.ok(x[1] .. " values live together never share the arena", arena_sound(x[2]))
    check.ok(x[1] .. " arena no larger than the most live at one step", arena <= live, string.format("%d > %d", arena, live))
  end
  check.ok(name .. " every activation is written before it is read, by the program only", dataflow_sound(p))
  check.ok(name .. " reads exactly the member's blocks", params_match(p, r, width, depth))
  local sound, runs = dataflow_sound(b, true)
  check.ok(name .. " backward: cotangents written before read, forward values only recomputed", sound, runs)
  check.equal(name .. " backward: recomputes g, ln1 and ln2 of each block", runs, 3 * depth)
  check.equal(name .. " backward: a gradient for every parameter the forward reads, no other", names_of(b, "grad"),
    names_of(p, "param"))
end

local function count_kernels(p)
  local n = {}
  for _, st in ipairs(p.steps) do
    local k = st.kind == "kernel" and st.kernel or st.kind
    n[k] = (n[k] or 0) + 1
  end
  return setmetatable(n, { __index = function() return 0 end })
end

-- A launch's extent of the batch (gen/lower_cuda.lua) at a batch.
local function extent_at(x, batch) return (x.b * batch + x.c) // x.d end

-- The texts of the modules a width's GPU programs launch from, as runtime/cuda_vit.c makes them:
-- the width's kernel set, vit_fused.cu and the glue.
local function module_texts(r, width)
  local set = emit.kernel_set(width, r.model.head_dim, width * r.model.mlp_ratio)
  return set, { ["vit_" .. set.name .. ".cu"] = emit.cu_text(set), ["vit_fused.cu"] = emit.fused_cu_text({ set }, {}),
                ["vit_glue.cu"] = template.fill("vit_glue.cu.tmpl", {}) }
end

-- Whether text defines CUDA kernel `name` (extern "C" __global__, with or without launch bounds).
local function defines(text, name)
  return text ~= nil and (text:find('extern "C" __global__ void ' .. name .. "(", 1, true) or
    text:find('extern "C" __global__ void __launch_bounds__%([^)]*%) ' .. name .. "%(")) ~= nil
end

-- Every kernel step and copy of the programs launches kernels (one at least: gen/schedule.lua asserts it) its
-- module's text defines, with positive geometry whose grid grows with the batch only.
local function launches_sound(texts, programs)
  for _, p in ipairs(programs) do
    for _, st in ipairs(p.steps) do
      for _, k in ipairs(st.kind ~= "gemm" and st.launches or {}) do
        if not defines(texts[k.module], k.name) then return false, k.name .. " is not in " .. k.module end
        for d = 1, 3 do
          local g = k.grid[d]
          if not (extent_at(g, 3) >= 1 and k.block[d] >= 1 and (g.b == 0 or g.over == "batch")) then
            return false, string.format("%s: grid %s block %d", k.name, lower_cuda.extent_text(g), k.block[d])
          end
        end
      end
    end
  end
  return true
end

-- Launch expressions become extents (what C evaluates without a parser), or are refused by name.
for _, c in ipairs({
  { "(rows * cols + 255) / 256", { rows = { b = 17, c = 1 }, cols = 96 }, "(1632 * batch + 351) / 256" },
  { "((n + TRAIN_CHUNK - 1) / TRAIN_CHUNK)", { n = "n", TRAIN_CHUNK = 4096 }, "(n + 4095) / 4096" },
  { "(tokens + 3) / 4", { tokens = 17 }, "5" }, { "HIDDEN - HEAD_DIM * 2", { HIDDEN = 384, HEAD_DIM = 32 }, "320" },
  { "rows * depth", { rows = "rows" }, 'launch geometry "rows * depth": unknown name depth' },
  { "(rows", { rows = "rows" }, 'launch geometry "(rows": bad syntax' },
  { "rows * batch", { rows = "rows", batch = "batch" }, 'launch geometry "rows * batch": a product of symbols or a multiple of a quotient' },
}) do
  local ok, x = pcall(lower_cuda.extent, c[1], c[2])
  check.equal("launch extent of " .. c[1], ok and lower_cuda.extent_text(x) or x, c[3])
end

-- The GPU schedule (gen/schedule.lua) against the CPU program of the same member: the same
-- FLOPs; residual + LayerNorm fused but for the first block's first LayerNorm; in bf16 every
-- GEMM operand bf16 (a fresh cast slot or a parameter's or constant's bf16 copy) and the
-- biases by the GEMM epilogue, exactly those of the CPU's bias rows; every kernel step and
-- copy launches CUDA kernels that its module's text defines, with positive geometry.
local function check_gpu(name, r, width, depth, crop, cpu, cpu_b)
  local _, texts = module_texts(r, width)
  for _, bf16 in ipairs({ true, false }) do
    local gname = name .. (bf16 and " GPU bf16:" or " GPU fp32:")
    local fw, bw = program.vit_forward_of_recipe(r, width, depth, crop, false, "gpu", bf16),
                   program.vit_forward_of_recipe(r, width, depth, crop, true, "gpu", bf16)
    check_pair(gname, fw, bw, r, width, depth)
    check.equal(gname .. " FLOPs = the CPU program's", program.eval(program.macs(fw), 3), program.eval(program.macs(cpu), 3))
    check.equal(gname .. " backward FLOPs = the CPU program's", program.eval(program.macs(bw), 3),
      program.eval(program.macs(cpu_b), 3))
    local f, b, c = count_kernels(fw), count_kernels(bw), count_kernels(cpu)
    check.ok(gname .. " every residual add fused with the LayerNorm after it, forward and backward",
      f.residual_layernorm_forward == 2 * depth and f.residual_forward == 0 and f.layernorm_forward == 1 and
      b.residual_layernorm_backward == 2 * depth and b.residual_backward == 0 and b.layernorm_backward == 1,
      string.format("%d fused, %d residual, %d LayerNorm forward", f.residual_layernorm_forward, f.residual_forward,
        f.layernorm_forward))
    local biases, operands_ok = 0, true
    for _, st in ipairs(fw.steps) do
      if st.kind == "gemm" then
        biases = biases + (st.bias and 1 or 0)
        for _, o in ipairs({ st.a, st.b }) do
          local kind = fw.values[o.value].kind
          operands_ok = operands_ok and (bf16 == (kind == "cast" or o.bf16 == true))
        end
      end
    end
    local cpu_biases = 0
    for _, st in ipairs(cpu.steps) do
      if st.kind == "kernel" and st.kernel == "fill_rows" and st.args[3].buffer then cpu_biases = cpu_biases + 1 end
    end
    check.ok(gname .. " GEMM operands bf16 exactly in bf16", operands_ok)
    check.equal(gname .. " biases by the GEMM epilogue", biases, bf16 and cpu_biases or 0)
    check.equal(gname .. " bias rows", f.fill_rows, bf16 and 0 or c.fill_rows)
    check.ok(gname .. " every kernel step and copy launches kernels its module defines, geometry positive",
      launches_sound(texts, { fw, bw }))
  end
end

-- For every width of every shipped family: each kernel gen/emit.lua lists for the width's set
-- is defined in its module's text, and the GPU programs of the smallest depth (both crops, fp32
-- and bf16) launch only kernels their module defines, with positive geometry.
for _, path in ipairs({ "tests/recipes/tiny_vit.lua", "tests/recipes/tiny_train.lua", "recipes/quickstart.lua",
                        "recipes/small_vit.lua", "recipes/vit_l16_ee1200.lua" }) do
  local r = recipe.load(path)
  local m, widths, ok, why = r.model, 0, true, nil
  for width = m.width[1], m.width[2], m.width[3] do
    local set, texts = module_texts(r, width)
    local listed = 0
    for _, list in pairs(emit.launches(set)) do
      for _, k in ipairs(list) do
        listed = listed + (k.module == "vit_fused.cu" and 0 or 1)
        if ok and not defines(texts[k.module], k.name) then ok, why = false, k.name .. " is listed but not defined" end
      end
    end
    if ok and listed < 16 then ok, why = false, string.format("%s: only %d kernels listed", set.name, listed) end
    for _, crop in ipairs({ "global", "local" }) do
      for _, bf16 in ipairs({ true, false }) do
        if ok then
          ok, why = launches_sound(texts, { program.vit_forward_of_recipe(r, width, m.depth[1], crop, false, "gpu", bf16),
                                            program.vit_forward_of_recipe(r, width, m.depth[1], crop, true, "gpu", bf16) })
          why = why and string.format("%s %s%s: %s", set.name, crop, bf16 and " bf16" or "", why)
        end
      end
    end
    widths = widths + 1
  end
  check.ok(string.format("%s: all %d widths: every kernel of the set's table is defined in its .cu, every kernel the GPU "
    .. "programs launch (fp32 and bf16, both crops) is defined in its module", path, widths), ok, why)
end

-- The launch geometry of the tiny family's w96 GPU programs (depth 4, 32 px, fp32) at batch 2:
-- the first launch of each name, forward then backward.
do
  local r, first, got = recipe.load("tests/recipes/tiny_vit.lua"), {}, {}
  local want = { "layernorm_forward (34, 1, 1) (96, 1, 1)", "gelu_forward (34, 1, 1) (256, 1, 1)",
                 "tokens_backward_dpos (3, 17, 1) (32, 8, 1)", "attention_forward (5, 3, 2) (128, 1, 1)",
                 "attention_backward_dkv (5, 3, 2) (128, 1, 1)" }
  for _, backward in ipairs({ false, true }) do
    for _, st in ipairs(program.vit_forward_of_recipe(r, 96, 4, "global", backward, "gpu", false).steps) do
      for _, k in ipairs(st.launches or {}) do
        local g = k.grid
        first[k.name] = first[k.name] or string.format("%s (%d, %d, %d) (%d, %d, %d)", k.name, extent_at(g[1], 2),
          extent_at(g[2], 2), extent_at(g[3], 2), k.block[1], k.block[2], k.block[3])
      end
    end
  end
  for i, w in ipairs(want) do got[i] = first[w:match("^%S+")] or "not launched" end
  check.equal("launch geometry of the w96 GPU programs at batch 2: layernorm, gelu, dpos column sums, attention",
    table.concat(got, ", "), table.concat(want, ", "))
end

local recipes = { "recipes/quickstart.lua", "recipes/small_vit.lua", "recipes/vit_l16_ee1200.lua", "tests/recipes/tiny_vit.lua" }
for _, path in ipairs(recipes) do
  local r = recipe.load(path)
  local m = r.model
  local members = { { m.width[1], m.depth[1] }, { m.width[2], m.depth[2] },
                    { m.width[1] + m.width[3], m.depth[2] - 1 } }
  for _, wd in ipairs(members) do
    local width, depth = wd[1], wd[2]
    for _, crop in ipairs({ "global", "local" }) do
      local p = program.vit_forward_of_recipe(r, width, depth, crop)
      local name = string.format("%s %dx%d %s:", r.name, width, depth, crop)
      local b = program.vit_forward_of_recipe(r, width, depth, crop, true)
      check_pair(name, p, b, r, width, depth)
      if crop == "global" then
        local _, macs = space.flops(m, width, depth, r.global_crops.size)
        check.equal(name .. " FLOPs of one image = gen/space.lua's", program.eval(program.macs(p), 1), macs)
        -- every GEMM twice (dW and dx) but the patch embedding's (no dx of the image)
        local patches = (r.global_crops.size // m.patch_size) ^ 2
        check.equal(name .. " backward FLOPs of one image = twice the forward's less the patch embedding's dx",
          program.eval(program.macs(b), 1), 2 * macs - patches * m.in_channels * m.patch_size ^ 2 * width)
      end
      check_gpu(name, r, width, depth, crop, p, b)
    end
  end
end
check.finish()
