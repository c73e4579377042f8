-- gen/lower_cuda.lua: lower an op of gen/ops.lua (IR of gen/ir.lua) to CUDA kernels (float).
-- Row stages: one `extern "C" __global__` kernel, one block per row; threads stride over the
-- columns; reductions are block-wide (warp shuffles, then shared memory: block_sum of
-- templates/cuda_prelude.cu.tmpl). Column reductions: one kernel per colsum stage with a
-- 32 x LANES block; each thread owns a column and adds its rows in a fixed order, then the
-- LANES partials are added in order: deterministic, no atomics.
-- Every kernel of an op takes the op's parameters in the order of the C function (no `k`).
local ir = require("gen.ir")
local template = require("gen.template")
local lower_c = require("gen.lower_c")

local lower_cuda = {}

lower_cuda.LANES = 8

local function real_literal(v)
  local s = ir.format_real(v)
  if s:find("[eE]") or s:find("%.") then return s .. "f" end
  return s .. ".0f"
end

local calls = { exp = "expf", sqrt = "sqrtf", erf = "erff", fma = "fmaf", log = "log", dsqrt = "sqrt",
                to_real = "(float)", to_double = "(double)" }
local target = {
  real = real_literal,
  call = function(fn, args) return assert(calls[fn], fn) .. "(" .. args .. ")" end,
  present = function(name) return name .. " != nullptr" end,
  mul = function(a, b) return "__fmul_rn(" .. a .. ", " .. b .. ")" end,
}

-- gen/lower_c.lua's helpers (printer, params, stored, lets) in CUDA's spelling.
local CUDA = { real = "float", bf16 = "unsigned short", round = "poa_bf16_round", target = target }
local function printer(op) return lower_c.printer(op, CUDA) end
local length_of = lower_c.length

-- The threads of a row kernel: the row length rounded up to a warp, at most 256 (256 for a
-- runtime length).
function lower_cuda.block_size(length)
  if not length then return 256 end
  local n = ((length + 31) // 32) * 32
  return math.min(n, 256)
end

-- Lines that split the flat index `flat` into the loop variables of `loops` (outermost first).
local function split_index(lines, loops, flat, p, pad)
  if #loops == 1 then
    lines[#lines + 1] = string.format("%sconst long %s = %s;", pad, loops[1][1], flat)
    return
  end
  lines[#lines + 1] = string.format("%slong rest = %s;", pad, flat)
  for j = #loops, 2, -1 do
    local v, ext = loops[j][1], p(loops[j][2])
    lines[#lines + 1] = string.format("%sconst long %s = rest %% %s;", pad, v, ext)
    lines[#lines + 1] = string.format("%srest /= %s;", pad, ext)
  end
  lines[#lines + 1] = string.format("%sconst long %s = rest;", pad, loops[1][1])
end

local function extent(loops, p)
  if #loops == 0 then return "1" end
  local parts = {}
  for _, l in ipairs(loops) do
    local s = p(l[2])
    if l[2].kind == "bin" then s = "(" .. s .. ")" end
    parts[#parts + 1] = s
  end
  return table.concat(parts, " * ")
end

local function row_kernel(op, dims)
  local p = printer(op)
  local block = lower_cuda.block_size(type(op.length) == "string" and dims[op.length] or nil)
  local lines = {}
  lower_c.prelude(op, lines, p)
  local total = extent(op.loops, p)
  lines[#lines + 1] = "    if (blockIdx.x >= " .. total .. ") return;"
  split_index(lines, op.loops, "blockIdx.x", p, "    ")
  local split_at = #lines
  local stride
  local function open_stride()
    if stride then return end
    local len = length_of(op, p)  -- after the lets it may use
    local index = type(op.length) == "string" and "int" or "long"
    stride = string.format("for (%s i = threadIdx.x; i < %s; i += %d)", index, len, block)
  end
  for _, s in ipairs(op.row_stages) do
    if s.stage == "reduce" then
      open_stride()
      local t = s.type == "double" and "double" or "float"
      local fn = (s.combine == "max" and "block_max" or "block_sum") .. (t == "double" and "_double" or "")
      if s.combine == "max" then
        lines[#lines + 1] = string.format("    %s %s = -__int_as_float(0x7f800000);  // -infinity", t, s.name)
        lines[#lines + 1] = string.format("    %s { const %s v = %s; %s = v > %s ? v : %s; }", stride, t,
          p(s.expr), s.name, s.name, s.name)
      else
        lines[#lines + 1] = string.format("    %s %s = 0;", t, s.name)
        lines[#lines + 1] = string.format("    %s %s += %s;", stride, s.name, p(s.expr))
      end
      lines[#lines + 1] = string.format("    %s = %s(%s);", s.name, fn, s.name)
    elseif s.stage == "let" then
      lines[#lines + 1] = lower_c.let("    ", s.name, s.expr, s.ctype, p, CUDA)
    elseif s.stage == "store" then
      lines[#lines + 1] = string.format("    if (threadIdx.x == 0) %s[%s] = %s;", s.target,
        p(s.row or op.row), lower_c.stored(op, s.target, p(s.expr), CUDA))
    elseif s.stage == "map" then
      open_stride()
      local out = p(ir.load(s.target, s.row))
      local body = string.format("%s %s %s %s;", stride, out, s.accumulate and "+=" or "=",
        lower_c.stored(op, s.target, p(s.expr), CUDA))
      if s.where then
        lines[#lines + 1] = "    if (" .. p(s.where) .. ")"
        lines[#lines + 1] = "        " .. body
      else
        lines[#lines + 1] = "    " .. body
      end
    end
  end
  -- a one-row op (a sum over a whole vector) need not name its row
  if #op.loops == 1 and not lower_c.names(table.concat(lines, "\n", split_at + 1), op.loops[1][1]) then
    table.remove(lines, split_at)
  end
  return template.fill("rowwise_kernel.cu.tmpl", {
    NAME = op.name, BLOCK = block, GRID = total, MATH = lower_c.math(op, "//   "),
    PARAMS = lower_c.params(op, CUDA), BODY = table.concat(lines, "\n") .. "\n",
  }), { name = op.name, grid = { total, "1" }, block = { block, 1 } }
end

local function colsum_kernel(op, s)
  local p = printer(op)
  local lanes = lower_cuda.LANES
  local names = {}
  for _, o in ipairs(s.outputs) do names[#names + 1] = o.target end
  local name = op.name .. "_" .. table.concat(names, "_")
  local lines = {}
  local len = length_of(op, p)
  local acc = "float"
  for _, o in ipairs(s.outputs) do
    if op.tensors[o.target].type == "double" then acc = "double" end
  end
  lines[#lines + 1] = string.format("    __shared__ %s partial[%d][%d][33];", acc, #s.outputs, lanes)
  if s.when then lines[#lines + 1] = "    if (!(" .. p(s.when) .. ")) return;" end
  lower_c.prelude(op, lines, p)
  lines[#lines + 1] = "    const int i = blockIdx.x * 32 + threadIdx.x;"
  if #s.keep > 0 then
    lines[#lines + 1] = "    if (blockIdx.y >= " .. extent(s.keep, p) .. ") return;"
    split_index(lines, s.keep, "blockIdx.y", p, "    ")
  end
  for j = 1, #s.outputs do lines[#lines + 1] = string.format("    %s acc%d = 0;", acc, j - 1) end
  lines[#lines + 1] = "    if (i < " .. len .. ") {"
  lines[#lines + 1] = string.format("        for (long o = threadIdx.y; o < %s; o += %d) {",
    extent(s.over, p), lanes)
  local inner = {}
  split_index(inner, s.over, "o", p, "            ")
  for _, l in ipairs(inner) do lines[#lines + 1] = l end
  for _, l in ipairs(s.lets) do
    lines[#lines + 1] = lower_c.let("            ", l[1], l[2], l[3], p, CUDA)
  end
  local pad = "            "
  if s.where then
    lines[#lines + 1] = pad .. "if (" .. p(s.where) .. ") {"
    pad = pad .. "    "
  end
  for j, o in ipairs(s.outputs) do
    lines[#lines + 1] = string.format("%sacc%d += %s;", pad, j - 1, p(o.expr))
  end
  if s.where then lines[#lines + 1] = "            }" end
  lines[#lines + 1] = "        }"
  lines[#lines + 1] = "    }"
  for j = 1, #s.outputs do
    lines[#lines + 1] = string.format("    partial[%d][threadIdx.y][threadIdx.x] = acc%d;", j - 1, j - 1)
  end
  lines[#lines + 1] = "    __syncthreads();"
  lines[#lines + 1] = "    if (threadIdx.y == 0 && i < " .. len .. ") {"
  for j, o in ipairs(s.outputs) do
    lines[#lines + 1] = string.format("        %s sum%d = 0;", acc, j - 1)
    lines[#lines + 1] = string.format("        for (int y = 0; y < %d; y++) sum%d += partial[%d][y][threadIdx.x];",
      lanes, j - 1, j - 1)
    local out = p(ir.load(o.target, o.row))
    lines[#lines + 1] = string.format("        %s %s sum%d;", out, o.assign and "=" or "+=", j - 1)
  end
  lines[#lines + 1] = "    }"
  local grid_x = string.format("%s / 32 rounded up", len)
  local grid_y = extent(s.keep, p)
  return template.fill("colsum_kernel.cu.tmpl", {
    NAME = name, OP = op.name, LANES = lanes, GRID_X = grid_x, GRID_Y = grid_y,
    MATH = lower_c.math(op, "//   "), PARAMS = lower_c.params(op, CUDA), BODY = table.concat(lines, "\n") .. "\n",
  }), { name = name, grid = { "(" .. len .. " + 31) / 32", grid_y }, block = { 32, lanes }, outputs = names }
end

-- The CUDA text of op and its kernels in launch order: {name, grid = {x, y}, block = {x, y}}
-- (a column-sum kernel also names the outputs it sums into: outputs = {names}).
function lower_cuda.op(op, dims)
  local texts, kernels = {}, {}
  if #op.row_stages > 0 then
    texts[#texts + 1], kernels[#kernels + 1] = row_kernel(op, dims)
  end
  for _, s in ipairs(op.colsums) do
    texts[#texts + 1], kernels[#kernels + 1] = colsum_kernel(op, s)
  end
  return table.concat(texts, "\n"), kernels
end

-- A launch dimension as data that C evaluates without a parser: {over, b, c, d} meaning
-- (b * over + c) / d (floor division; d >= 1) of the one symbol `over` (no over: b = 0, the
-- constant c). text: an expression of + - * / ( ) (C's integer division) over integers and
-- names; names[id] is an integer, a symbol (a string: itself) or a lin {b, c} of "batch".
-- What is no such form (a product of symbols, a sum of quotients) is refused.
local Extent = {}
local function extent_of(over, b, c, d)
  if b == 0 then return setmetatable({ b = 0, c = c // d, d = 1 }, Extent) end
  return setmetatable({ over = over, b = b, c = c, d = d }, Extent)
end
local function lift(x)
  if getmetatable(x) == Extent then return x end
  return math.type(x) == "integer" and extent_of(nil, 0, x, 1) or error("not an integer: " .. tostring(x), 0)
end
local function need(ok, why) return ok or error(why, 0) end
function Extent.__add(x, y)
  x, y = lift(x), lift(y)
  if x.b == 0 then x, y = y, x end
  if y.b == 0 then return extent_of(x.over, x.b, x.c + y.c * x.d, x.d) end
  need(x.d == 1 and y.d == 1 and x.over == y.over, "a sum of quotients or of two symbols")
  return extent_of(x.over, x.b + y.b, x.c + y.c, 1)
end
function Extent.__sub(x, y)
  y = lift(y)
  need(y.d == 1, "a quotient subtracted")
  return x + extent_of(y.over, -y.b, -y.c, 1)
end
function Extent.__mul(x, y)
  x, y = lift(x), lift(y)
  if x.b == 0 then x, y = y, x end
  need(y.b == 0 and (x.d == 1 or y.c == 1), "a product of symbols or a multiple of a quotient")
  return extent_of(x.over, x.b * y.c, x.c * y.c, x.d)
end
function Extent.__idiv(x, y)
  x, y = lift(x), lift(y)
  need(y.b == 0 and y.c >= 1, "a division by other than a positive constant")
  return extent_of(x.over, x.b, x.c, x.d * y.c)
end

function lower_cuda.extent(text, names)
  local env = setmetatable({}, { __index = function(_, id)
    local v = names[id]
    if v == nil then error("unknown name " .. id, 0) end
    if type(v) == "string" then return extent_of(v, 1, 0, 1) end
    if type(v) == "table" then return extent_of("batch", v.b, v.c, 1) end
    return v
  end })
  local chunk = load("return " .. (tostring(text):gsub("/", "//")), "=geometry", "t", env)
  local ok, x = false, "bad syntax"
  if chunk then ok, x = pcall(function() return lift(chunk()) end) end
  if not ok then error(string.format('launch geometry "%s": %s', text, x), 0) end
  return x
end

-- A block dimension: an expression that must be a constant.
function lower_cuda.constant(text, names)
  local x = lower_cuda.extent(text, names)
  if x.b ~= 0 then error(string.format('launch geometry "%s": not a constant', text), 0) end
  return x.c
end

-- A kernel's launch {name, module, grid = 3 extents, block = 3 integers} from its expressions
-- (k.grid and k.block, up to three each, a missing one 1) with names bound.
function lower_cuda.launch(k, names, module)
  local grid, block = {}, {}
  for d = 1, 3 do
    grid[d] = lower_cuda.extent(k.grid[d] or 1, names)
    block[d] = lower_cuda.constant(k.block[d] or 1, names)
  end
  return { name = k.name, module = module or k.module, grid = grid, block = block }
end

-- An extent as text: "34", "(2 * batch + 289) / 256".
function lower_cuda.extent_text(x)
  if x.b == 0 then return tostring(x.c) end
  local s = (x.b == 1 and "" or x.b .. " * ") .. x.over
  if x.c ~= 0 then s = s .. (x.c > 0 and " + " or " - ") .. math.abs(x.c) end
  return x.d == 1 and s or "(" .. s .. ") / " .. x.d
end

return lower_cuda
