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

local calls = { exp = "real_fast_exp", erf = "real_fast_erf", sqrt = "real_sqrt", fma = "real_fma",
                log = "log", dsqrt = "sqrt", to_real = "(real)", to_double = "(double)" }

local target = {
  real = function(v) return "(real)" .. ir.format_real(v) end,
  call = function(fn, args) return assert(calls[fn], "lower_c: unknown function " .. fn) .. "(" .. args .. ")" end,
  present = function(name) return name .. " != NULL" end,
}

local function printer(op, row, column)
  local ctx = { op = op, row = row, column = column or "i" }
  return function(e) return ir.print(e, target, ctx) end
end

local element_ctypes = { real = "real", double = "double", bf16 = "uint16_t", long = "long" }
local scalar_ctypes = { mask = "const unsigned char *", long = "long ", real = "real ", double = "double " }

local function ctype_of(op, p)
  if scalar_ctypes[p[2]] then return scalar_ctypes[p[2]] end
  local e = element_ctypes[op.tensors[p[1]].type]
  return (p[2] == "in" and "const " or "") .. e .. " *"
end

function lower_c.params(op)
  local list = {}
  for _, p in ipairs(op.params) do list[#list + 1] = ctype_of(op, p) .. p[1] end
  return table.concat(list, ", ")
end

-- The row length as C text: a constant name, or the printed runtime expression.
local function length_of(op, p)
  if type(op.length) == "string" then return op.length end
  return p(op.length)
end

-- The stored value of e into tensor t: rounded to bf16 for bf16 tensors.
local function stored(op, t, text)
  if op.tensors[t].type == "bf16" then return "poa_bf16_from_real(" .. text .. ")" end
  return text
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
  if ctype then return ctype end
  if ir.is_condition(e) then return "int" end
  return "real"
end

local function row_body(op, lines, depth)
  local p = printer(op, op.row)
  local len = length_of(op, p)
  for _, s in ipairs(op.row_stages) do
    local pad = indent(depth)
    if s.stage == "reduce" then
      local t = s.type == "double" and "double" or "real"
      if s.combine == "max" then
        lines[#lines + 1] = string.format("%s%s %s = -INFINITY;", pad, t, s.name)
        lines[#lines + 1] = pad .. "#pragma omp simd reduction(max:" .. s.name .. ")"
        lines[#lines + 1] = string.format("%sfor (long i = 0; i < %s; i++) { const %s v = %s; %s = v > %s ? v : %s; }",
          pad, len, t, p(s.expr), s.name, s.name, s.name)
      else
        lines[#lines + 1] = string.format("%s%s %s = 0;", pad, t, s.name)
        lines[#lines + 1] = pad .. "#pragma omp simd reduction(+:" .. s.name .. ")"
        lines[#lines + 1] = string.format("%sfor (long i = 0; i < %s; i++) %s += %s;", pad, len, s.name, p(s.expr))
      end
    elseif s.stage == "let" then
      lines[#lines + 1] = string.format("%sconst %s %s = %s;", pad, let_type(s.expr, s.ctype), s.name, p(s.expr))
    elseif s.stage == "store" then
      lines[#lines + 1] = string.format("%s%s[%s] = %s;", pad, s.target, p(s.row or op.row),
        stored(op, s.target, p(s.expr)))
    elseif s.stage == "map" then
      local t = op.tensors[s.target]
      local out = ir.print(ir.load(s.target, s.row), target, { op = op, row = op.row, column = "i" })
      assert(t.shape == "rows" or t.shape == "span" or t.shape == "vector",
        op.name .. ": map target must be a row, span or vector tensor")
      assert(not (s.accumulate and t.type == "bf16"), op.name .. ": no += into a bf16 tensor")
      local inner = pad
      if s.where then
        lines[#lines + 1] = pad .. "if (" .. p(s.where) .. ") {"
        inner = indent(depth + 1)
      end
      lines[#lines + 1] = inner .. "#pragma omp simd"
      lines[#lines + 1] = string.format("%sfor (long i = 0; i < %s; i++) %s %s %s;", inner, len, out,
        s.accumulate and "+=" or "=", stored(op, s.target, p(s.expr)))
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
  local p = printer(op, op.row)
  local runtime = type(op.length) ~= "string" or dims == nil
  -- a length known at run time only: blocks of 16 columns, the last one shorter
  local cb = runtime and 16 or lower_c.column_block(assert(dims[op.length], "lower_c: unknown length " .. tostring(op.length)))
  local len = length_of(op, p)
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
  lines[#lines + 1] = string.format("%sfor (long c0 = 0; c0 < %s; c0 += %d) {", indent(depth), len, cb)
  local d1 = depth + 1
  local count = tostring(cb)
  if runtime then
    count = "count"
    lines[#lines + 1] = string.format("%sconst int count = %s - c0 < %d ? (int)(%s - c0) : %d;", indent(d1), len, cb, len, cb)
  end
  for i, o in ipairs(s.outputs) do
    local t = op.tensors[o.target].type == "double" and "double" or "real"
    lines[#lines + 1] = string.format("%s%s acc%d[%d] = {0}; /* %s */", indent(d1), t, i - 1, cb, o.target)
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
  lines[#lines + 1] = string.format("%sfor (int c = 0; c < %s; c++) {", indent(d3), count)
  lines[#lines + 1] = indent(d3 + 1) .. "const long i = c0 + c;"
  for i, o in ipairs(s.outputs) do
    lines[#lines + 1] = string.format("%sacc%d[c] += %s;", indent(d3 + 1), i - 1, p(o.expr))
  end
  lines[#lines + 1] = indent(d3) .. "}"
  if s.where then lines[#lines + 1] = indent(d2) .. "}" end
  lines[#lines + 1] = indent(d1) .. "}"
  lines[#lines + 1] = string.format("%sfor (int c = 0; c < %s; c++) {", indent(d1), count)
  lines[#lines + 1] = indent(d1 + 1) .. "const long i = c0 + c;"
  for i, o in ipairs(s.outputs) do
    local out = ir.print(ir.load(o.target, o.row), target, { op = op, row = op.row, column = "i" })
    lines[#lines + 1] = string.format("%s%s %s acc%d[c];", indent(d1 + 1), out, o.assign and "=" or "+=", i - 1)
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

-- style "train": the functions of the training kernels (no kernel set argument, extern);
-- "extern": the same for an op of gen/ops.lua (the fused ops beside a kernel set), "runtime"
-- for one of gen/ops_runtime.lua (beside the training kernels).
local templates = {
  vit = { cloned = "rowwise_cloned_function.c.tmpl", plain = "rowwise_function.c.tmpl" },
  train = { cloned = "train_cloned_function.c.tmpl", plain = "train_function.c.tmpl", source = "gen/ops_train.lua" },
  extern = { cloned = "train_cloned_function.c.tmpl", plain = "train_function.c.tmpl", source = "gen/ops.lua" },
  runtime = { cloned = "train_cloned_function.c.tmpl", plain = "train_function.c.tmpl", source = "gen/ops_runtime.lua" },
}

local function cloned(op, style)
  local lines = {}
  row_body(op, lines, 2)
  local body = table.concat(lines, "\n")
  local args, unused = {}, {}
  for _, p in ipairs(op.params) do
    args[#args + 1] = p[1]
    if scalar_ctypes[p[2]] and p[2] ~= "mask" and not body:find("%f[%w_]" .. p[1] .. "%f[^%w_]") then
      unused[#unused + 1] = "    (void)" .. p[1] .. ";\n"
    end
  end
  local math = {}
  for _, m in ipairs(op.math) do math[#math + 1] = "     " .. m end
  return template.fill(templates[style].cloned, {
    SOURCE = templates[style].source,
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

-- The C function of op for the set with compile-time dims {WIDTH=, HIDDEN=, HEADS=, HEAD_DIM=},
-- or dims nil for the generic set (the names stand for values read at run time from the set);
-- style "vit" (default: a static function of a kernel set, first argument the set) or "train".
function lower_c.op(op, dims, style)
  style = style or "vit"
  if elementwise(op) then return cloned(op, style) end
  local lines = {}
  local p = printer(op, op.row)
  for _, pre in ipairs(op.prelude) do
    lines[#lines + 1] = string.format("%sconst long %s = %s;", indent(1), pre[1], p(pre[2]))
  end
  row_stages(op, lines)
  for _, s in ipairs(op.colsums) do colsum(op, s, lines, dims) end
  local math = {}
  for _, m in ipairs(op.math) do math[#math + 1] = "     " .. m end
  return template.fill(templates[style].plain, {
    SOURCE = templates[style].source,
    NAME = op.name,
    MATH = table.concat(math, "\n"),
    PARAMS = lower_c.params(op),
    BODY = table.concat(lines, "\n") .. "\n",
  })
end

return lower_c
