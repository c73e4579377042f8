-- gen/program.lua: lowers a forward graph (gen/graph.lua) to the flat program the executor runs
-- (runtime/program.c on the CPU; a backend's schedule, gen/schedule.lua, rewrites the lowering
-- for the GPU: runtime/program_cuda.c), lays its arena out by liveness, and prints it.
--
-- program = {
--   title, values = { {name, kind, elem, size = lin, offset = lin (kind "act"), ld} },
--   steps = { {kind = "gemm", what, ta, tb, m, n, k, alpha, beta, a, lda, b, ldb, c, ldc[, bias]}
--             {kind = "kernel", kernel, args = { {buffer = operand} | {scalar = lin} }}
--             {kind = "copy", src, dst, count} },
--   arena = lin, output = value id[, device = "gpu"] }
-- (a GPU program's kernel steps and copies also list their CUDA launches: gen/schedule.lua)
-- where an operand is {value = id, offset = lin[, bf16 = true]} and a lin {b, c} means b * batch + c
-- (elements). GEMMs are row-major: C (m x n) = alpha op(A) op(B) + beta C. The kernels are the
-- row-wise ops of gen/ops.lua (their C parameter order) and the runtime kernels of
-- gen/graph.lua. Nothing here is ViT-specific but program.vit_forward at the end.
local graph = require("gen.graph")
local space = require("gen.space")

local program = {}
local lin, lin_of = graph.lin, graph.lin_of

local ALIGN = 16

local function lin_mul(a, k) return lin(a.b * k, a.c * k) end
local function lin_add(a, b) return lin(a.b + b.b, a.c + b.c) end
local function align(n) return (n + ALIGN - 1) // ALIGN * ALIGN end
function program.eval(l, batch) return l.b * batch + l.c end

-- "b*B + c" as text ("B" the batch), or its value when batch is given.
function program.lin_text(l, batch)
  if batch then return tostring(program.eval(l, batch)) end
  if l.b == 0 then return tostring(l.c) end
  local s = (l.b == 1 and "" or (l.b .. "*")) .. "B"
  if l.c ~= 0 then s = s .. "+" .. l.c end
  return s
end

-- Step builders. `s` is the lowering state: {steps, graph}.
local function operand(x, extra)
  x = graph.at(x)
  if x == nil then return nil end
  local off = x.offset or lin(0, 0)
  if extra then off = lin_add(off, lin_of(extra)) end
  return { value = x.value.id, offset = off }
end

local function kernel(s, name, args, macs)
  local list = {}
  for i, p in ipairs(graph.kernel_params(name)) do
    local a = args[p[1]]
    if p[2] == "out" or p[2] == "in" or p[2] == "mask" then
      list[i] = { buffer = a } -- nil: a NULL pointer (an optional tensor)
    else
      assert(a ~= nil, "program: kernel " .. name .. " needs " .. p[1])
      list[i] = { scalar = lin_of(a) }
    end
  end
  s.steps[#s.steps + 1] = { kind = "kernel", kernel = name, args = list, macs = macs or lin(0, 0) }
end

-- m and k may be lins (the batch in one of them at most).
local function gemm(s, t)
  t.kind = "gemm"
  local m, k = lin_of(t.m), lin_of(t.k)
  assert(m.b == 0 or k.b == 0, "program: a GEMM with the batch in m and k")
  t.macs = m.b == 0 and lin_mul(k, m.c * t.n) or lin_mul(m, t.n * k.c)
  s.steps[#s.steps + 1] = t
end

local function copy(s, src, dst, count)
  s.steps[#s.steps + 1] = { kind = "copy", src = src, dst = dst, count = count, macs = lin(0, 0) }
end

-- The lowering of each graph op to CPU steps.
local lower = {}

function lower.patchify(s, n)
  local m = s.m
  kernel(s, "patchify", { patches = operand(n.y), images = operand(n.x), batch = lin(1, 0),
                          channels = m.in_channels, size = m.image_size, patch = m.patch_size })
end

-- Per group: y_g = bias_g (or 0), then y_g += alpha x W_g^T (GEMM, beta 1); in a schedule with
-- the bias epilogue (gen/schedule.lua) y_g = alpha x W_g^T + bias_g by the GEMM alone, beta 0.
function lower.linear(s, n)
  local rows, ldy = n.y.rows, n.n * n.groups
  local epilogue = s.sched and s.sched.bias_epilogue
  for g = 0, n.groups - 1 do
    local y, bias = operand(n.y, g * n.n), n.bias and operand(n.bias, g * n.group_stride)
    if not epilogue then kernel(s, "fill_rows", { y = y, ld = ldy, vec = bias, rows = rows, cols = n.n }) end
    gemm(s, { what = n.y.name .. (n.groups > 1 and ("[" .. g .. "]") or ""), ta = 0, tb = 1, m = rows,
              n = n.n, k = n.k, alpha = n.alpha, a = operand(n.x), lda = n.k,
              b = operand(n.w, g * n.group_stride * n.ldw), ldb = n.ldw, beta = epilogue and 0 or 1,
              c = y, ldc = ldy, bias = epilogue and bias or nil })
  end
end

function lower.layernorm(s, n)
  kernel(s, "layernorm_forward", { y = operand(n.y), mean = operand(n.mean), rstd = operand(n.rstd), x = operand(n.x),
                                   w = operand(n.w), b = operand(n.b), rows = n.y.rows })
end

-- MACs: the two batched matmuls, q k^T and probs v (T x T x D per sample each).
function lower.attention(s, n)
  local m = s.m
  kernel(s, "attention_forward", { out = operand(n.y), probs = operand(n.probs), qkv = operand(n.qkv),
                                   batch = lin(1, 0), tokens = m.tokens }, lin(2 * m.tokens * m.tokens * m.width, 0))
end

function lower.residual(s, n)
  local y = operand(n.y)
  copy(s, operand(n.x), y, lin_mul(n.y.rows, n.y.cols))
  kernel(s, "residual_forward", { x = y, h = operand(n.h), gamma = operand(n.gamma),
                                  sample_scale = operand(n.scale), batch = lin(1, 0), tokens = s.m.tokens })
end

-- A residual and the LayerNorm after it fused (gen/schedule.lua's rewrite 1): y = x (copied),
-- then y += s gamma h and ln = LayerNorm(y) in one kernel.
function lower.residual_layernorm(s, n)
  local y = operand(n.y)
  copy(s, operand(n.x), y, lin_mul(n.y.rows, n.y.cols))
  kernel(s, "residual_layernorm_forward", { x = y, y = operand(n.ln), mean = operand(n.mean),
    rstd = operand(n.rstd), h = operand(n.h), gamma = operand(n.gamma), sample_scale = operand(n.scale),
    w = operand(n.w), bias = operand(n.b), batch = lin(1, 0), tokens = s.m.tokens })
end

function lower.gelu(s, n)
  kernel(s, "gelu_forward", { g = operand(n.y), u = operand(n.x), rows = n.y.rows })
end

-- Row 0 copied, rows 1.. = R (patches x native^2) * pos_embed[1..] (native^2 x D, ld Dmax).
function lower.resample_pos(s, n)
  local m = s.m
  local native = m.native_grid * m.native_grid
  copy(s, operand(n.x), operand(n.y), lin(0, m.width))
  gemm(s, { what = n.y.name, ta = 0, tb = 0, m = lin(0, m.patches), n = m.width, k = native, alpha = 1,
            a = operand(n.r), lda = native, b = operand(n.x, n.x.value.ld), ldb = n.x.value.ld, beta = 0,
            c = operand(n.y, m.width), ldc = m.width })
end

function lower.tokens(s, n)
  local m = s.m
  kernel(s, "tokens_forward", { x = operand(n.y), patch = operand(n.patch), cls = operand(n.cls),
                                mask_token = operand(n.mask_token), pos = operand(n.pos), pos_ld = n.pos_ld,
                                mask = operand(n.mask), batch = lin(1, 0), patches = m.patches })
end

-- The operands a step reads or writes.
local function step_operands(st)
  if st.kind == "gemm" then return { st.a, st.b, st.c } end
  if st.kind == "copy" then return { st.src, st.dst } end
  local list = {}
  for _, a in ipairs(st.args) do
    if a.buffer then list[#list + 1] = a.buffer end -- nil or false: a NULL pointer
  end
  return list
end

-- Best-fit offset of `size` among the placed intervals {offset, size} it must not overlap:
-- the smallest gap that holds it, else the end of the last one.
local function best_fit(busy, size)
  table.sort(busy, function(a, b) return a[1] < b[1] end)
  local at, best, best_gap = 0, nil, math.huge
  for _, iv in ipairs(busy) do
    local gap = iv[1] - at
    if gap >= size and gap < best_gap then best, best_gap = at, gap end
    at = math.max(at, iv[1] + iv[2])
  end
  return best or at
end

-- Liveness on the step list: each activation lives from its first to its last step (the
-- output, and the values named in keep, to the end). Placement: best-fit by decreasing size among the values live at the same
-- time. Sizes are either b * batch (every per-sample activation) or constant; the first are
-- placed in units of the batch, the constant ones in a gap among them or after them, so every
-- offset is a lin valid for every batch (sizes rounded up to 16 elements).
local function place(values, steps, output, keep)
  local first, last = {}, {}
  for i, st in ipairs(steps) do
    for _, o in ipairs(step_operands(st)) do
      first[o.value], last[o.value] = first[o.value] or i, i
    end
  end
  local order = {}
  for id, v in ipairs(values) do
    if v.kind == "act" then
      local size = lin_mul(v.rows, v.cols)
      assert(size.b == 0 or size.c == 0, "program: " .. v.name .. ": a size must be b * batch or constant")
      v.size = size
      v.aligned = lin(align(size.b), align(size.c))
      v.first = assert(first[id], "program: " .. v.name .. " is never used")
      v.last = (id == output or (keep and keep[v.name])) and #steps + 1 or last[id]
      order[#order + 1] = v
    end
  end
  local function key(v) return v.aligned.b > 0 and v.aligned.b or v.aligned.c end
  table.sort(order, function(a, b)
    if (a.aligned.b > 0) ~= (b.aligned.b > 0) then return a.aligned.b > 0 end
    if key(a) ~= key(b) then return key(a) > key(b) end
    return a.id < b.id
  end)
  local placed, arena = {}, lin(0, 0)
  local function busy_with(v, part)
    local busy = {}
    for _, p in ipairs(placed) do
      if p.part == part and p.first <= v.last and v.first <= p.last then busy[#busy + 1] = { p.at, key(p) } end
    end
    return busy
  end
  for _, v in ipairs(order) do
    local part = v.aligned.b > 0 and "b" or "c"
    v.part, v.at = part, best_fit(busy_with(v, part), key(v))
    -- a constant-size value fits, at every batch, in a gap of as many batch units as it has
    -- elements: there when such a gap is free inside the batch part
    if part == "c" then
      local at = best_fit(busy_with(v, "b"), key(v))
      if at + key(v) <= arena.b then v.part, v.at = "b", at end
    end
    arena[v.part] = math.max(arena[v.part], v.at + key(v))
    placed[#placed + 1] = v
  end
  for _, v in ipairs(order) do
    v.offset = v.part == "b" and lin(v.at, 0) or lin(arena.b, v.at)
  end
  return arena
end

-- What gen/backward.lua builds its program with: the step builders, the forward lowerings
-- (the backward's recompute runs them), the placement.
program.steps = { operand = operand, kernel = kernel, gemm = gemm, copy = copy }
program.lowerings = lower
program.place = place
program.lin_mul = lin_mul
function program.offset(o, extra)
  return { value = o.value, offset = lin_add(o.offset, lin_of(extra)) }
end

-- The program of graph g (built for the member table m). sched (optional: the CPU's when nil)
-- is a backend's schedule (gen/schedule.lua): the lowerings read its flags, and its
-- finish(s, values) rewrites the step list before the arena is placed.
-- keep: names of activations to keep to the end (a training forward's, for its backward).
function program.lower(g, title, sched, keep)
  local s = { steps = {}, m = g.m, sched = sched }
  for _, n in ipairs(g.nodes) do assert(lower[n.op], "program: no lowering of " .. n.op)(s, n) end
  if sched then sched.finish(s, g.values) end
  local out = g.output_value and g.output_value.id
  local arena = place(g.values, s.steps, out, keep)
  return { title = title, values = g.values, steps = s.steps, arena = arena, output = out }
end

-- The member table of a ViT (what models/vit.lua's forward reads). cfg: the fields of the
-- runtime's poa_vit_config (max_width, max_depth, head_dim, mlp_ratio, patch_size,
-- in_channels, image_size = the native size, qkv_bias, proj_bias, ffn_bias, layerscale).
function program.vit_member(cfg, width, depth, image_size)
  local grid, native = image_size // cfg.patch_size, cfg.image_size // cfg.patch_size
  local ids = space.block_ids({ depth = { 1, cfg.max_depth } }, depth)
  local block_ids = {}
  for j, id in ipairs(ids) do block_ids[j - 1] = id end
  return {
    width = width, depth = depth, heads = width // cfg.head_dim, hidden = width * cfg.mlp_ratio,
    max_width = cfg.max_width, max_hidden = cfg.max_width * cfg.mlp_ratio, alpha = cfg.max_width / width,
    image_size = image_size, patch_size = cfg.patch_size, in_channels = cfg.in_channels,
    patch_len = cfg.in_channels * cfg.patch_size * cfg.patch_size, grid = grid, native_grid = native,
    patches = grid * grid, tokens = grid * grid + 1, native_tokens = native * native + 1,
    block_ids = block_ids, qkv_bias = cfg.qkv_bias, proj_bias = cfg.proj_bias, ffn_bias = cfg.ffn_bias,
    layerscale = cfg.layerscale ~= 0,
  }
end

-- The forward graph of ViT member width x depth at image_size (models/vit.lua's forward).
function program.vit_graph(cfg, width, depth, image_size)
  local m = program.vit_member(cfg, width, depth, image_size)
  local family = require("gen.recipe").load_model("vit")
  local g = graph.new(m)
  family.forward(g, m)
  return g, string.format("ViT member %dx%d at %dx%d px (%d tokens)", width, depth, image_size, image_size, m.tokens)
end

-- The training pair of graph g in schedule sched (nil: the CPU's): the backward
-- (gen/backward.lua), and the forward with every activation the backward reads kept to its end.
-- The runtime places the backward's own arena after the forward's: one arena, by liveness.
function program.training(g, what, sched, prefix)
  local b = require("gen.backward").lower(g, (prefix or "") .. "backward of " .. what, sched)
  local keep = {}
  for _, v in ipairs(b.values) do if v.kind == "saved" then keep[v.name] = true end end
  local f = program.lower(g, (prefix or "") .. "training forward of " .. what, sched, keep)
  return f, b
end

-- The builders runtime/vit.c calls by name, (cfg, width, depth, image_size[, bf16]) -> the
-- programs of the member's graph: its forward, its training forward (program.training), its
-- backward (gen/backward.lua), the GPU schedule's forward and backward (gen/schedule.lua), fp32
-- or with bf16 GEMM operands.
for name, build in pairs({
  vit_forward = function(g, what) return program.lower(g, "forward of " .. what) end,
  vit_train_forward = function(g, what) return (program.training(g, what)) end,
  vit_backward = function(g, what) return require("gen.backward").lower(g, "backward of " .. what) end,
  vit_gpu_programs = function(g, what, bf16) return require("gen.schedule").gpu_programs(g, what, bf16) end,
}) do
  program[name] = function(cfg, width, depth, image_size, bf16)
    local g, what = program.vit_graph(cfg, width, depth, image_size)
    return build(g, what, bf16)
  end
end

-- The forward (or backward) from a loaded recipe (gen/recipe.lua) and crop "global" or "local",
-- for device "cpu" (nil) or "gpu" (bf16: with bf16 GEMM operands).
function program.vit_forward_of_recipe(r, width, depth, crop, backward, device, bf16)
  local md = r.model
  local cfg = { max_width = md.width[2], max_depth = md.depth[2], head_dim = md.head_dim, mlp_ratio = md.mlp_ratio,
                patch_size = md.patch_size, in_channels = md.in_channels, image_size = r.global_crops.size,
                qkv_bias = md.qkv_bias, proj_bias = md.proj_bias, ffn_bias = md.ffn_bias,
                layerscale = md.layerscale }
  local size = crop == "local" and r.local_crops.size or r.global_crops.size
  if device == "gpu" then return select(backward and 2 or 1, program.vit_gpu_programs(cfg, width, depth, size, bf16)) end
  return (backward and program.vit_backward or program.vit_forward)(cfg, width, depth, size)
end

-- Total MACs of a program (GEMMs and attention matmuls: space.lua's convention).
function program.macs(p)
  local t = lin(0, 0)
  for _, st in ipairs(p.steps) do t = lin_add(t, st.macs) end
  return t
end

-- The largest sum of the aligned sizes of the values live at one step, at this batch: the
-- bound no placement can beat.
function program.max_live(p, batch)
  local best = 0
  for i = 1, #p.steps do
    local sum = 0
    for _, v in ipairs(p.values) do
      if v.kind == "act" and v.first <= i and i <= v.last then sum = sum + program.eval(v.aligned, batch) end
    end
    best = math.max(best, sum)
  end
  return best
end

local function operand_text(p, o, batch)
  if not o then return "NULL" end
  local v = p.values[o.value]
  local off = (o.offset.b ~= 0 or o.offset.c ~= 0) and ("+" .. program.lin_text(o.offset, batch)) or ""
  return (v.kind == "grad" and "grad:" or "") .. v.name .. off .. (o.bf16 and "@bf16" or "")
end

local function step_text(p, st, batch)
  local t = function(l) return program.lin_text(l, batch) end
  if st.kind == "gemm" then
    local l = function(x) return type(x) == "number" and tostring(x) or t(x) end
    return string.format("gemm   %s = %.6g * %s%s (ld %d) x %s%s (ld %d) + %s   [%s x %d x %s, ldc %d]",
      operand_text(p, st.c, batch), st.alpha, operand_text(p, st.a, batch), st.ta == 1 and "^T" or "", st.lda,
      operand_text(p, st.b, batch), st.tb == 1 and "^T" or "", st.ldb,
      st.bias and ("bias " .. operand_text(p, st.bias, batch) .. " (epilogue)") or (string.format("%g", st.beta) .. " * C"),
      l(st.m), st.n, l(st.k), st.ldc)
  elseif st.kind == "copy" then
    return string.format("copy   %s <- %s   [%s]", operand_text(p, st.dst, batch), operand_text(p, st.src, batch),
      t(st.count))
  end
  local args = {}
  for i, a in ipairs(st.args) do
    local name = graph.kernel_params(st.kernel)[i][1]
    args[i] = a.scalar and (name .. "=" .. t(a.scalar)) or operand_text(p, a.buffer, batch)
  end
  return string.format("kernel %s(%s)", st.kernel, table.concat(args, ", "))
end

-- The readable program: the arena (at batch B, or symbolic in B), its values, the steps with
-- their FLOPs: the multiply-accumulates of the GEMMs and the attention matmuls, 1 FLOP each
-- (gen/space.lua's convention, that of `poa list`).
function program.text(p, batch)
  local t = function(l) return program.lin_text(l, batch) end
  local at = batch or 1
  local arena, macs = program.eval(p.arena, at), program.eval(program.macs(p), at)
  local lines = { p.title,
    string.format("batch %s; arena %s elements (%s at batch %d: %.2f MiB in fp32; the most live at one step %.2f MiB)",
      batch and tostring(batch) or "B (symbolic)", program.lin_text(p.arena), arena, at, arena * 4 / 2 ^ 20,
      program.max_live(p, at) * 4 / 2 ^ 20),
    string.format("%d steps, %.4f GFLOPs at batch %d (1 per multiply-accumulate, as poa list)", #p.steps,
      macs / 1e9, at),
    "values:", string.format("  %-22s %-6s %-14s %-14s %s", "name", "kind", "elements", "arena offset", "live (steps)") }
  for _, v in ipairs(p.values) do
    if v.kind == "act" then
      lines[#lines + 1] = string.format("  %-22s %-6s %-14s %-14s %d..%s", v.name, v.kind, t(v.size), t(v.offset),
        v.first, v.last > #p.steps and "end" or tostring(v.last))
    else
      lines[#lines + 1] = string.format("  %-22s %s", v.name, v.kind)
    end
  end
  lines[#lines + 1] = "steps:"
  for i, st in ipairs(p.steps) do
    local f = program.eval(st.macs, at)
    lines[#lines + 1] = string.format("  %3d %s%s%s", i, step_text(p, st, batch),
      f > 0 and string.format("   %.4g MFLOPs", f / 1e6) or "", st.note and ("   (" .. st.note .. ")") or "")
    for _, k in ipairs(st.launches or {}) do
      local grid = {}
      for d, x in ipairs(k.grid) do grid[d] = require("gen.lower_cuda").extent_text(x) end
      lines[#lines + 1] = string.format("        launch %s (%s) grid (%s) block (%s)", k.name, k.module,
        table.concat(grid, ", "), table.concat(k.block, ", "))
    end
  end
  return table.concat(lines, "\n") .. "\n"
end

return program
