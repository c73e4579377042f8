-- gen/lower_c.lua: lower an op of gen/ops.lua (IR of gen/ir.lua) to one C function.
-- Row stages: `#pragma omp parallel for` over the rows, one thread per row, the column loops
-- inside (reductions as `omp simd` sums, whose order is fixed at compile time).
-- Column reductions: one thread per block of COLS columns (and kept index), the rows added in
-- increasing order into a local accumulator, then added once to the output; no atomics.
-- Scalars are `real` (real.h): the same file compiles in fp32 and fp64.
-- exp and erf lower to real_fast_exp / real_fast_erf: in fp32 the inline, vectorisable
-- versions of runtime/fast_math.h (within 1.4 ulp of expf, 7.1e-8 of erf), so the `omp simd`
-- loops of GELU vectorise; in fp64 libm's exp and erf.
local ir = require("gen.ir")
local template = require("gen.template")

local lower_c = {}

local fast = { exp = "real_fast_exp", erf = "real_fast_erf" }

local target = {
  real = function(v) return "(real)" .. ir.format_real(v) end,
  call = function(fn, args) return (fast[fn] or ("real_" .. fn)) .. "(" .. args .. ")" end,
  present = function(name) return name .. " != NULL" end,
}

local function printer(op, row, column)
  local ctx = { op = op, row = row, column = column or "i" }
  return function(e) return ir.print(e, target, ctx) end
end

local ctypes = { out = "real *", ["in"] = "const real *", mask = "const unsigned char *", long = "long " }

function lower_c.params(op)
  local list = {}
  for _, p in ipairs(op.params) do list[#list + 1] = ctypes[p[2]] .. p[1] end
  return table.concat(list, ", ")
end

-- The largest of 16, 8, ..., 1 that divides n: the column block of the column reductions
-- (16 floats: whole cache lines per row, and D / 16 parallel tasks).
function lower_c.column_block(n)
  local cb = 16
  while n % cb ~= 0 do cb = cb // 2 end
  return cb
end

local function indent(n) return string.rep("    ", n) end

-- Nested row loops; returns the lines opening them and the depth inside.
local function open_loops(lines, loops, depth, p)
  for _, l in ipairs(loops) do
    lines[#lines + 1] = string.format("%sfor (long %s = 0; %s < %s; %s++)", indent(depth), l[1], l[1],
      p(l[2]), l[1])
  end
  lines[#lines] = lines[#lines] .. " {"
  return depth + 1
end

local function let_type(e, ctype)
  if ctype == "int" or ir.is_condition(e) then return "int" end
  return "real"
end

local function row_body(op, lines, depth)
  local p = printer(op, op.row)
  local len = op.length
  for _, s in ipairs(op.row_stages) do
    local pad = indent(depth)
    if s.stage == "reduce" then
      lines[#lines + 1] = pad .. "real " .. s.name .. " = 0;"
      lines[#lines + 1] = pad .. "#pragma omp simd reduction(+:" .. s.name .. ")"
      lines[#lines + 1] = string.format("%sfor (int i = 0; i < %s; i++) %s += %s;", pad, len, s.name, p(s.expr))
    elseif s.stage == "let" then
      lines[#lines + 1] = string.format("%sconst %s %s = %s;", pad, let_type(s.expr, s.ctype), s.name, p(s.expr))
    elseif s.stage == "store" then
      lines[#lines + 1] = string.format("%s%s[%s] = %s;", pad, s.target, p(s.row or op.row), p(s.expr))
    elseif s.stage == "map" then
      local t = op.tensors[s.target]
      local out = ir.print(ir.load(s.target, s.row), target, { op = op, row = op.row, column = "i" })
      assert(t.shape == "rows", op.name .. ": map target must be a row tensor")
      local inner = pad
      if s.where then
        lines[#lines + 1] = pad .. "if (" .. p(s.where) .. ") {"
        inner = indent(depth + 1)
      end
      lines[#lines + 1] = inner .. "#pragma omp simd"
      lines[#lines + 1] = string.format("%sfor (int i = 0; i < %s; i++) %s %s %s;", inner, len, out,
        s.accumulate and "+=" or "=", p(s.expr))
      if s.where then lines[#lines + 1] = pad .. "}" end
    end
  end
end

local function row_stages(op, lines)
  if #op.row_stages == 0 then return end
  local p = printer(op, op.row)
  local collapse = #op.loops > 1 and (" collapse(" .. #op.loops .. ")") or ""
  lines[#lines + 1] = indent(1) .. "#pragma omp parallel for" .. collapse .. " schedule(static)"
  local depth = open_loops(lines, op.loops, 1, p)
  row_body(op, lines, depth)
  lines[#lines + 1] = indent(1) .. "}"
end

local function colsum(op, s, lines, dims)
  local cb = lower_c.column_block(assert(dims[op.length], "lower_c: unknown length " .. tostring(op.length)))
  local p = printer(op, op.row)
  local depth = 1
  local names = {}
  for _, o in ipairs(s.outputs) do names[#names + 1] = o.target end
  lines[#lines + 1] = string.format("%s/* %s: column sums over the rows, %d columns per thread. */",
    indent(1), table.concat(names, ", "), cb)
  if s.when then
    lines[#lines + 1] = indent(1) .. "if (" .. p(s.when) .. ") {"
    depth = 2
  end
  lines[#lines + 1] = string.format("%s#pragma omp parallel for collapse(%d) schedule(static)",
    indent(depth), #s.keep + 1)
  for _, l in ipairs(s.keep) do
    lines[#lines + 1] = string.format("%sfor (long %s = 0; %s < %s; %s++)", indent(depth), l[1], l[1], p(l[2]), l[1])
  end
  lines[#lines + 1] = string.format("%sfor (int c0 = 0; c0 < %s; c0 += %d) {", indent(depth), op.length, cb)
  local d1 = depth + 1
  for i, o in ipairs(s.outputs) do
    lines[#lines + 1] = string.format("%sreal acc%d[%d] = {0}; /* %s */", indent(d1), i - 1, cb, o.target)
  end
  local d2 = open_loops(lines, s.over, d1, p)
  for _, l in ipairs(s.lets) do
    lines[#lines + 1] = string.format("%sconst %s %s = %s;", indent(d2), let_type(l[2], l[3]), l[1], p(l[2]))
  end
  local d3 = d2
  if s.where then
    lines[#lines + 1] = indent(d2) .. "if (" .. p(s.where) .. ") {"
    d3 = d2 + 1
  end
  lines[#lines + 1] = indent(d3) .. "#pragma omp simd"
  lines[#lines + 1] = string.format("%sfor (int c = 0; c < %d; c++) {", indent(d3), cb)
  lines[#lines + 1] = indent(d3 + 1) .. "const int i = c0 + c;"
  for i, o in ipairs(s.outputs) do
    lines[#lines + 1] = string.format("%sacc%d[c] += %s;", indent(d3 + 1), i - 1, p(o.expr))
  end
  lines[#lines + 1] = indent(d3) .. "}"
  if s.where then lines[#lines + 1] = indent(d2) .. "}" end
  lines[#lines + 1] = indent(d1) .. "}"
  lines[#lines + 1] = string.format("%sfor (int c = 0; c < %d; c++) {", indent(d1), cb)
  lines[#lines + 1] = indent(d1 + 1) .. "const int i = c0 + c;"
  for i, o in ipairs(s.outputs) do
    local out = ir.print(ir.load(o.target, o.row), target, { op = op, row = op.row, column = "i" })
    lines[#lines + 1] = string.format("%s%s += acc%d[c];", indent(d1 + 1), out, i - 1)
  end
  lines[#lines + 1] = indent(d1) .. "}"
  lines[#lines + 1] = indent(depth) .. "}"
  if s.when then lines[#lines + 1] = indent(1) .. "}" end
end

-- An op of one row loop whose stages are maps, lets and stores only (no reductions: GELU):
-- its rows are a function compiled once per instruction set (rowwise_cloned_function.c.tmpl).
local function elementwise(op)
  if #op.loops ~= 1 or #op.prelude > 0 or #op.colsums > 0 then return false end
  for _, s in ipairs(op.row_stages) do
    if s.stage == "reduce" then return false end
  end
  return true
end

local function cloned(op)
  local lines = {}
  row_body(op, lines, 2)
  local args, unused = {}, {}
  for _, p in ipairs(op.params) do
    args[#args + 1] = p[1]
    if p[2] == "long" then unused[#unused + 1] = "    (void)" .. p[1] .. ";\n" end
  end
  local math = {}
  for _, m in ipairs(op.math) do math[#math + 1] = "     " .. m end
  return template.fill("rowwise_cloned_function.c.tmpl", {
    NAME = op.name,
    MATH = table.concat(math, "\n"),
    PARAMS = lower_c.params(op),
    ARGS = table.concat(args, ", "),
    UNUSED = table.concat(unused),
    ROW = op.loops[1][1],
    EXTENT = printer(op, op.row)(op.loops[1][2]),
    BODY = table.concat(lines, "\n") .. "\n",
  })
end

-- The C function of op for the set with compile-time dims {WIDTH=, HIDDEN=, HEADS=, HEAD_DIM=}.
function lower_c.op(op, dims)
  if elementwise(op) then return cloned(op) end
  local lines = {}
  local p = printer(op, op.row)
  for _, pre in ipairs(op.prelude) do
    lines[#lines + 1] = string.format("%sconst long %s = %s;", indent(1), pre[1], p(pre[2]))
  end
  row_stages(op, lines)
  for _, s in ipairs(op.colsums) do colsum(op, s, lines, dims) end
  local math = {}
  for _, m in ipairs(op.math) do math[#math + 1] = "     " .. m end
  return template.fill("rowwise_function.c.tmpl", {
    NAME = op.name,
    MATH = table.concat(math, "\n"),
    PARAMS = lower_c.params(op),
    BODY = table.concat(lines, "\n") .. "\n",
  })
end

return lower_c
