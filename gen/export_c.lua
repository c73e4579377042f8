-- gen/export_c.lua: a member's eval-mode forward as a standalone C program (`poa export
-- --what c`). The member is lowered as the intact network of a ViT whose full size is the
-- member (max_width = width, max_depth = depth: alpha 1, every block, leading dimensions the
-- member's own), reading the compact weights of `poa export` (alpha baked in) from
-- model.safetensors by mmap. Per image size one straight-line C function runs the program of
-- gen/program.lua (models/vit.lua's layer order) with every shape a constant; the kernels are
-- the member's, lowered by gen/lower_c.lua from gen/ops.lua (and gen/ops_runtime.lua) and the
-- attention template. The folder it writes:
--   poa_member.h, poa_member.c   the plain C API and the forward (generated)
--   main.c, Makefile             a tiny runner and its build (templates/export_*)
--   real.h fast_math.h error.h safetensors.h safetensors.c safetensors_write.c
--   pos_resample.h pos_resample.c image_eval.h image_eval.c jpeg_decode.h jpeg_decode.c data_png.c
--                                runtime files copied as they are (self-contained: the file
--                                reader and writer, the fp32 math, the bicubic position matrix,
--                                poa's evaluation transform and its JPEG / PNG decoding for
--                                main.c's folders of images)
local program = require("gen.program")
local ops = require("gen.ops")
local ops_runtime = require("gen.ops_runtime")
local lower_c = require("gen.lower_c")
local template = require("gen.template")
local ir = require("gen.ir")
local recipe = require("gen.recipe")
local lower_cuda = require("gen.lower_cuda")
local graph = require("gen.graph")

local export_c = {}

export_c.copied = { "real.h", "fast_math.h", "error.h", "safetensors.h", "safetensors.c", "safetensors_write.c",
                    "pos_resample.h", "pos_resample.c", "image_eval.h", "image_eval.c", "jpeg_decode.h",
                    "jpeg_decode.c", "data_png.c" }

-- "b * B + c" as C (B the batch variable).
local function lin_c(l)
  if l.b == 0 then return tostring(l.c) end
  local s = (l.b == 1 and "B" or (l.b .. " * B"))
  if l.c ~= 0 then s = s .. " + " .. l.c end
  return s
end
local function add(a, b) return { b = a.b + b.b, c = a.c + b.c } end

-- The C pointer of operand o of program p (NULL for an absent one): an activation in the arena
-- A, a weight of the file (m->w[i]), the images, the resampling matrix of size index si, the
-- LayerScale ones. The mask and the drop-path scales do not exist in eval mode: NULL.
local function pointer(spec, p, o, si)
  if o == nil then return "NULL" end
  local v = p.values[o.value]
  local function at(base, off)
    local text = lin_c(off)
    return text == "0" and base or ("(" .. base .. " + " .. text .. ")")
  end
  if v.kind == "act" then return at("A", add(v.offset, o.offset)) end
  if v.kind == "param" then
    local i = spec.index[v.name]
    assert(i, "export_c: the member has no tensor " .. v.name)
    if not spec.tensors[i].file then return "NULL" end
    return at("m->w[" .. (i - 1) .. "]", o.offset)
  end
  if v.kind == "input" then return v.name == "images" and at("images", o.offset) or "NULL" end
  if v.name == "resample" then return at("m->resample[" .. si .. "]", o.offset) end
  if v.name == "ones" then return at("m->ones", o.offset) end
  error("export_c: no place for " .. v.kind .. " " .. v.name)
end

local function step_c(spec, p, st, si, launch)
  local ptr = function(o) return pointer(spec, p, o, si) end
  local l = function(x) return type(x) == "number" and tostring(x) or lin_c(x) end
  if st.kind == "gemm" then
    local call = string.format("gemm(%s%d, %d, %s, %d, %s, (real)%s, %s, %d, %s, %d, (real)%s, %s, %d)",
      launch and "m, " or "", st.ta, st.tb, l(st.m), st.n, l(st.k), ir.format_real(st.alpha), ptr(st.a), st.lda,
      ptr(st.b), st.ldb, ir.format_real(st.beta), ptr(st.c), st.ldc)
    return launch and ("if (" .. call .. ") return -1;") or (call .. ";")
  elseif st.kind == "copy" and not launch then
    return string.format("memcpy(%s, %s, sizeof(real) * (size_t)(%s));", ptr(st.dst), ptr(st.src), lin_c(st.count))
  end
  if st.kind == "copy" and launch then
    return string.format("CHECK(cudaMemcpyAsync(%s, %s, sizeof(float) * (size_t)(%s), cudaMemcpyDeviceToDevice, m->stream));",
      ptr(st.dst), ptr(st.src), lin_c(st.count))
  end
  local args = {}
  for _, a in ipairs(st.args) do
    args[#args + 1] = a.scalar and lin_c(a.scalar) or ptr(a.buffer)
  end
  if launch then return launch(st, args) end
  return string.format("%s(NULL, %s);", st.kernel, table.concat(args, ", "))
end

-- The kernels the programs call, each once, in first-use order: lower(op) of each op's
-- description (gen/lower_c.lua or gen/lower_cuda.lua), the attention's text (its template:
-- attention_forward.c.tmpl or .cu.tmpl).
local function kernels_text(programs, lower, attention)
  local done, parts = {}, {}
  for _, p in ipairs(programs) do
    for _, st in ipairs(p.steps) do
      local name = st.kind == "kernel" and st.kernel
      if name and not done[name] then
        done[name] = true
        if name == "attention_forward" then
          parts[#parts + 1] = attention
        else
          parts[#parts + 1] = (lower(assert(ops[name] or ops_runtime[name], "export_c: no description of kernel " .. name)))
        end
      end
    end
  end
  return table.concat(parts, "\n")
end

-- spec = { cfg (gen/program.lua's vit_member cfg of the member-sized ViT), width, depth, sizes,
--          tensors = { {name, file, shape} } (the member's tensors: poa's name, the name in
--          model.safetensors or nil when the naming has none), member, recipe, names }
function export_c.files(spec)
  local cfg, width, depth = spec.cfg, spec.width, spec.depth
  assert(cfg.max_width == width and cfg.max_depth == depth, "export_c: the ViT must be the member's size")
  spec.index = {}
  for i, t in ipairs(spec.tensors) do spec.index[t.name] = i end
  local heads, hidden = width // cfg.head_dim, width * cfg.mlp_ratio
  local dims = { WIDTH = width, HEADS = heads, HEAD_DIM = cfg.head_dim, HIDDEN = hidden }
  local native_grid = cfg.image_size // cfg.patch_size
  local programs, forwards, size_rows, size_list = {}, {}, {}, {}
  for si, size in ipairs(spec.sizes) do
    local p = program.vit_forward(cfg, width, depth, size)
    programs[si] = p
    local grid = size // cfg.patch_size
    local lines = { string.format("/* %s: %d steps, arena %s reals. */", p.title, #p.steps, lin_c(p.arena)),
      string.format("static int forward_%d(poa_member *m, const float *images, long B, float *A) {", size) }
    for i, st in ipairs(p.steps) do
      lines[#lines + 1] = string.format("    /* %d */ %s", i, step_c(spec, p, st, si - 1))
    end
    lines[#lines + 1] = "    return 0;\n}\n"
    forwards[si] = table.concat(lines, "\n")
    local out = p.values[p.output].offset
    size_rows[si] = string.format("    { %d, %d, %d, %d, %d, %d, %d, forward_%d },", size, grid,
      grid == native_grid and 0 or 1, p.arena.b, p.arena.c, out.b, out.c, size)
    size_list[si] = tostring(size)
  end
  local tensor_rows = {}
  for _, t in ipairs(spec.tensors) do
    local shape = {}
    for k, d in ipairs(t.shape) do shape[k] = tostring(d) end
    tensor_rows[#tensor_rows + 1] = string.format('    { %s, "%s", %d, { %s } },',
      t.file and ('"' .. t.file .. '"') or "NULL", t.name, #t.shape, table.concat(shape, ", "))
  end
  local constants = { WIDTH = width, DEPTH = depth, HEADS = heads, HEAD_DIM = cfg.head_dim, HIDDEN = hidden,
                      PATCH = cfg.patch_size, CHANNELS = cfg.in_channels, NATIVE = cfg.image_size,
                      MEMBER = spec.member, RECIPE = spec.recipe, SIZES = table.concat(size_list, ", "),
                      SIZE_COUNT = #spec.sizes }
  local c = { MEMBER = spec.member, RECIPE = spec.recipe, NAMES = spec.names, WIDTH = width, HEADS = heads,
              HEAD_DIM = cfg.head_dim, HIDDEN = hidden, NATIVE_GRID = native_grid }
  c.TENSOR_COUNT = #spec.tensors
  c.COMMON = template.fill("export_common.c.tmpl", { MEMBER = spec.member, NAMES = spec.names,
    TENSORS = table.concat(tensor_rows, "\n"), SIZE_ROWS = table.concat(size_rows, "\n") })
  local what = spec.what or "c"
  local want_c, want_cuda = what == "c" or what == "all", what == "cuda" or what == "all"
  local targets = {}
  if want_c then targets[#targets + 1] = "poa_member" end
  if want_cuda then targets[#targets + 1] = "poa_member_cuda" end
  local files = {
    { "poa_member.h", template.fill("export_member.h.tmpl", constants) },
    { "main.c", template.fill("export_main.c.tmpl", { MEMBER = spec.member, RECIPE = spec.recipe }) },
    { "Makefile", template.fill("export_Makefile.tmpl", { MEMBER = spec.member, RECIPE = spec.recipe,
                                                          TARGETS = table.concat(targets, " ") }) },
  }
  if want_cuda then files[#files + 1] = { "poa_member.cu", export_c.cuda_text(spec, programs, c) } end
  if want_c then
    c.GEMM = template.read("export_gemm.c.tmpl")
    c.KERNELS = kernels_text(programs, function(op) return lower_c.op(op, dims) end,
      template.read("attention_forward.c.tmpl"))
    c.FORWARDS = table.concat(forwards, "\n")
    files[#files + 1] = { "poa_member.c", template.fill("export_member.c.tmpl", c) }
  end
  for _, name in ipairs(export_c.copied) do
    files[#files + 1] = { name, assert(recipe.read_source("runtime/" .. name)) }
  end
  return files
end

-- ---- CUDA (`--what cuda`): the same steps launched on the GPU ----

-- The attention kernel's launch (templates/attention_forward.cu.tmpl: one warp per query row,
-- 4 rows a block): grid ((tokens + 3) / 4, HEADS, batch), 128 threads.
local attention_launch = { name = "attention_forward", grid = { "(tokens + 3) / 4", "HEADS", "batch" }, block = { 128, 1 } }

-- Integer expressions of an op's prelude as host C.
local host_target = {
  real = function(v) return ir.format_real(v) end,
  call = function(fn) error("export_c: a call (" .. fn .. ") in a launch expression") end,
  present = function(name) return name .. " != NULL" end,
}

-- The launch of kernel step st (args: its C arguments): the scalars and the op's prelude as
-- host constants, the grid and block of gen/lower_cuda.lua (or of the attention template).
local function launch_cuda(st, args, dims)
  local lines, call = { "{" }, {}
  for i, prm in ipairs(graph.kernel_params(st.kernel)) do
    if prm[2] == "out" or prm[2] == "in" or prm[2] == "mask" then
      call[i] = args[i]
    else
      lines[#lines + 1] = string.format("        const long %s = %s;", prm[1], args[i])
      call[i] = prm[1]
    end
  end
  local k = attention_launch
  if st.kernel ~= "attention_forward" then
    local op = assert(ops[st.kernel] or ops_runtime[st.kernel], "export_c: no description of kernel " .. st.kernel)
    for _, pre in ipairs(op.prelude) do
      lines[#lines + 1] = string.format("        const long %s = %s;", pre[1], ir.print(pre[2], host_target, { op = op, row = op.row, column = "i" }))
    end
    local _, list = lower_cuda.op(op, dims)
    assert(#list == 1, "export_c: " .. st.kernel .. " is more than one kernel")
    k = list[1]
    k.grid[3] = "1"
  end
  lines[#lines + 1] = string.format("        %s<<<dim3((unsigned)(%s), (unsigned)(%s), (unsigned)(%s)), dim3(%s, %s), 0, m->stream>>>(%s);",
    k.name, k.grid[1], k.grid[2], k.grid[3], k.block[1], k.block[2], table.concat(call, ", "))
  lines[#lines + 1] = "        CHECK(cudaGetLastError());"
  lines[#lines + 1] = "    }"
  return table.concat(lines, "\n")
end

-- poa_member.cu: the member's forward per size on the GPU (the C API of poa_member.h).
function export_c.cuda_text(spec, programs, c)
  local dims = { WIDTH = c.WIDTH, HEADS = c.HEADS, HEAD_DIM = c.HEAD_DIM, HIDDEN = c.HIDDEN }
  local forwards = {}
  for si, p in ipairs(programs) do
    local size = spec.sizes[si]
    local lines = { string.format("/* %s: %d steps, arena %s floats. */", p.title, #p.steps, lin_c(p.arena)),
      string.format("static int forward_%d(poa_member *m, const float *images, long B, float *A) {", size) }
    for i, st in ipairs(p.steps) do
      lines[#lines + 1] = string.format("    /* %d */ %s", i, step_c(spec, p, st, si - 1,
        function(step, args) return launch_cuda(step, args, dims) end))
    end
    lines[#lines + 1] = "    return 0;\n}\n"
    forwards[si] = table.concat(lines, "\n")
  end
  local values = {}
  for k, v in pairs(c) do values[k] = v end
  values.KERNELS = kernels_text(programs, function(op) return lower_cuda.op(op, dims) end,
    template.fill("attention_forward.cu.tmpl", { HEADS = dims.HEADS, HEAD_DIM = dims.HEAD_DIM,
      SCALE = ir.format_real(1 / math.sqrt(dims.HEAD_DIM)) }))
  values.PRELUDE = template.read("cuda_prelude.cu.tmpl")
  values.FORWARDS = table.concat(forwards, "\n")
  return template.fill("export_member.cu.tmpl", values)
end

-- Writes the files into dir (which exists); returns their names, one a line.
function export_c.write(dir, spec)
  local names = {}
  for _, f in ipairs(export_c.files(spec)) do
    local path = dir .. "/" .. f[1]
    local out, err = io.open(path, "w")
    if not out then error(path .. ": " .. tostring(err), 0) end
    out:write(f[2])
    out:close()
    names[#names + 1] = f[1]
  end
  return table.concat(names, " ")
end

return export_c
