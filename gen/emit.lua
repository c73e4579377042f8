-- gen/emit.lua: writes every generated file of the given recipes into outdir.
--   lua5.4 gen/emit.lua OUTDIR RECIPE.lua ...
-- Per distinct (width, head_dim, hidden) over all recipes (one kernel set, shared by recipes):
--   OUTDIR/vit_w<D>_h<Dh>_f<F>.c        the C kernels, `poa_vit_kernels_w<D>_h<Dh>_f<F>`
--   OUTDIR/cuda/vit_w<D>_h<Dh>_f<F>.cu  the same ops as CUDA kernels (compiled with NVRTC)
-- and OUTDIR/vit_generic.c (the same C for any shape, read at run time), OUTDIR/registry.c
-- (poa_vit_kernel_sets, poa_vit_kernels_find), OUTDIR/cuda/files.txt (the .cu files, one a
-- line), OUTDIR/README, and per recipe OUTDIR/<recipe name>/space.txt. (A member's programs,
-- arena and launches: `poa program`.)
-- outputs() lists exactly what write() writes (configure.lua hands the list to ninja).
package.path = "./?.lua;" .. package.path
local recipe = require("gen.recipe")
local ops = require("gen.ops")
local ops_train = require("gen.ops_train")
local ops_runtime = require("gen.ops_runtime")
local lower_c = require("gen.lower_c")
local lower_cuda = require("gen.lower_cuda")
local template = require("gen.template")

local emit = {}

local function widths_of(model)
  local list = {}
  for w = model.width[1], model.width[2], model.width[3] do list[#list + 1] = w end
  return list
end

-- The kernel set of one shape: {name = "w<D>_h<Dh>_f<F>", width, heads, head_dim, hidden,
-- recipes = {}} (collect fills recipes; runtime/kernels_compiled.c asks for a width no recipe
-- of the build has).
function emit.kernel_set(width, head_dim, hidden)
  return { name = string.format("w%d_h%d_f%d", width, head_dim, hidden), width = width,
           heads = width // head_dim, head_dim = head_dim, hidden = hidden, recipes = {} }
end

-- The loaded ViT recipes and the distinct kernel sets, in a stable order:
-- sets = { {name, width, heads, head_dim, hidden, recipes = {names}} } sorted by shape.
-- overrides: "section.field=value" strings applied to every recipe (a run's command line).
function emit.collect(recipe_paths, overrides)
  local loaded, sets, by_name, paths = {}, {}, {}, {}
  for _, path in ipairs(recipe_paths) do
    local r = recipe.load(path, overrides)
    if paths[r.name] and paths[r.name] ~= path then
      error(string.format("%s: field 'name': recipe name '%s' is also used by %s", path, r.name, paths[r.name]), 0)
    end
    if not paths[r.name] and r.model.family == "vit" then
      paths[r.name] = path
      loaded[#loaded + 1] = r
      for _, w in ipairs(widths_of(r.model)) do
        local candidate = emit.kernel_set(w, r.model.head_dim, r.model.mlp_ratio * w)
        local set = by_name[candidate.name]
        if not set then
          set = candidate
          by_name[set.name] = set
          sets[#sets + 1] = set
        end
        if set.recipes[#set.recipes] ~= r.name then set.recipes[#set.recipes + 1] = r.name end
      end
    end
  end
  table.sort(sets, function(a, b)
    if a.width ~= b.width then return a.width < b.width end
    if a.head_dim ~= b.head_dim then return a.head_dim < b.head_dim end
    return a.hidden < b.hidden
  end)
  return loaded, sets
end

local function dims_of(set)
  return { WIDTH = set.width, HEADS = set.heads, HEAD_DIM = set.head_dim, HIDDEN = set.hidden }
end

local ir = require("gen.ir")

-- The attention scale 1 / sqrt(head_dim) as a literal that reads back as the same double.
local function scale_of(set) return ir.format_real(1 / math.sqrt(set.head_dim)) end

-- An op of ops.fused_order as the extern C function poa_vit_<op>_<set> (prefix "poa_vit_") or
-- the CUDA kernel <op>_<set> (prefix "").
local function named(op, name)
  local copy = {}
  for key, value in pairs(op) do copy[key] = value end
  copy.name = name
  return copy
end
local function fused_c_op(name, set, prefix)
  return named(ops[name], (prefix or "poa_vit_") .. name .. "_" .. set.name)
end

-- The layout kernels of gen/ops_runtime.lua as extern C functions poa_<op> beside the training
-- kernels (runtime/program.c's CPU runner calls them): {op, style} pairs for lower_c.
local function c_ops_of_train_file()
  local list = {}
  for _, name in ipairs(ops_train.order) do list[#list + 1] = { ops_train[name], "train" } end
  for _, name in ipairs(ops_runtime.order) do list[#list + 1] = { named(ops_runtime[name], "poa_" .. name), "runtime" } end
  return list
end

-- The CUDA kernels each op launches, in launch order, for kernel set `set`: op name -> list of
-- {name, module (the .cu it is in), grid = {x, y[, z]}, block = {x, y} (expressions of the
-- op's scalar parameters and the set's WIDTH, HEADS, HEAD_DIM, HIDDEN), outputs (a column-sum
-- kernel's: the outputs it sums into)}. The .cu tables below and the GPU schedule
-- (gen/schedule.lua) both read it.
function emit.launches(set)
  local dims, module = dims_of(set), "vit_" .. set.name .. ".cu"
  local by_op = {}
  local function add(name, list, file)
    for _, k in ipairs(list) do k.module = file end
    by_op[name] = list
  end
  for _, name in ipairs(ops.order) do add(name, select(2, lower_cuda.op(ops[name], dims)), module) end
  local attention_grid = { "(tokens + 3) / 4", "HEADS", "batch" }
  add("attention_forward", { { name = "attention_forward", grid = attention_grid, block = { 128, 1 } } }, module)
  add("attention_backward", { { name = "attention_backward_dq", grid = attention_grid, block = { 128, 1 } },
                              { name = "attention_backward_dkv", grid = attention_grid, block = { 128, 1 } } }, module)
  for _, name in ipairs(ops.fused_order) do
    add(name, select(2, lower_cuda.op(fused_c_op(name, set, ""), dims)), "vit_fused.cu")
  end
  return by_op
end

-- The rows of a .cu's "Kernels, in launch order" table for the launches in list (names padded
-- to width).
local function table_lines_of(list, width, lines)
  for _, k in ipairs(list) do
    lines[#lines + 1] = string.format("//   %-" .. width .. "s grid (%s, %s), block (%s, %s)", k.name, k.grid[1],
      table.concat(k.grid, ", ", 2), k.block[1], k.block[2])
  end
end

-- cuda/vit_fused.cu: the fused ops of every set in one file (one NVRTC compile), each set's
-- kernels in a namespace holding its constants; kernel names <op>_<set>.
function emit.fused_cu_text(sets, recipes)
  local parts, table_lines = {}, {}
  for _, set in ipairs(sets) do
    local dims = dims_of(set)
    local kernels = {}
    for _, name in ipairs(ops.fused_order) do
      local text, list = lower_cuda.op(fused_c_op(name, set, ""), dims)
      kernels[#kernels + 1] = text
      table_lines_of(list, 44, table_lines)
    end
    parts[#parts + 1] = string.format("namespace set_%s {\nenum { WIDTH = %d, HEADS = %d, HEAD_DIM = %d, HIDDEN = %d };\n\n%s}  // namespace set_%s\n",
      set.name, set.width, set.heads, set.head_dim, set.hidden, table.concat(kernels, "\n"), set.name)
  end
  return template.fill("vit_fused.cu.tmpl", {
    RECIPES = table.concat(recipes, ", "), TABLE = table.concat(table_lines, "\n"),
    PRELUDE = template.read("cuda_prelude.cu.tmpl"), SETS = table.concat(parts, "\n"),
  })
end

-- The C kernel set of `set`, or with set nil the generic set (vit_generic.c,
-- `poa_vit_kernels_generic`): the same ops and templates with the shape read at run time from
-- the set each function is given (WIDTH is k->width, ...) instead of compile-time constants, and
-- without the fused ops (extern functions of one set). origin: the set's .origin (kernels.h),
-- "generated" ("generic") unless given (runtime/kernels_compiled.c: "compiled at run time").
local generic_shape = "#define SHAPE_AT_RUN_TIME 1 /* read from the set k each function is given */\n"
  .. "#define WIDTH (k->width)\n#define HEADS (k->heads)\n#define HEAD_DIM (k->head_dim)\n#define HIDDEN (k->hidden)"

function emit.c_text(set, origin)
  local generic = set == nil
  set = set or { name = "generic", width = 0, heads = 0, head_dim = 0, hidden = 0, recipes = { "any" } }
  local dims = not generic and dims_of(set) or nil
  local functions, pointers = {}, {}
  for _, name in ipairs(ops.order) do functions[#functions + 1] = lower_c.op(ops[name], dims) end
  for _, name in ipairs(generic and {} or ops.fused_order) do
    functions[#functions + 1] = lower_c.op(fused_c_op(name, set), dims, "extern")
  end
  for _, which in ipairs({ "forward", "backward" }) do
    functions[#functions + 1] = template.read("attention_" .. which .. ".c.tmpl")
  end
  for _, name in ipairs({ "layernorm_forward", "layernorm_backward", "gelu_forward", "gelu_backward",
                          "attention_forward", "attention_backward", "residual_forward",
                          "residual_backward", "tokens_forward", "tokens_backward" }) do
    pointers[#pointers + 1] = string.format("    .%s = %s,\n", name, name)
  end
  return template.fill("kernel_set.c.tmpl", {
    FILE = "vit_" .. set.name .. ".c", SET = set.name, WIDTH = set.width, HEADS = set.heads,
    HEAD_DIM = set.head_dim, HIDDEN = set.hidden, ORIGIN = origin or (generic and "generic" or "generated"),
    SUMMARY = generic and "any shape (the fields below are 0: poa_vit_kernels_generic_for, runtime/kernels.h)"
      or string.format("width D = %d, %d heads of %d, MLP hidden F = %d", set.width, set.heads, set.head_dim, set.hidden),
    SHAPE = generic and generic_shape or "#define SHAPE_AT_RUN_TIME 0\n"
      .. string.format("enum { WIDTH = %d, HEADS = %d, HEAD_DIM = %d, HIDDEN = %d };", set.width, set.heads,
        set.head_dim, set.hidden),
    RECIPES = #set.recipes > 0 and table.concat(set.recipes, ", ") or "none (compiled at run time)",
    FUNCTIONS = table.concat(functions, "\n"), POINTERS = table.concat(pointers),
  })
end

function emit.cu_text(set)
  local dims = dims_of(set)
  local kernels, table_lines = {}, {}
  local launches = emit.launches(set)
  for _, name in ipairs(ops.order) do
    kernels[#kernels + 1] = lower_cuda.op(ops[name], dims)
    table_lines_of(launches[name], 34, table_lines)
  end
  table_lines_of(launches.attention_forward, 34, table_lines)
  table_lines_of(launches.attention_backward, 34, table_lines)
  for _, which in ipairs({ "forward", "backward" }) do
    kernels[#kernels + 1] = template.fill("attention_" .. which .. ".cu.tmpl",
      { HEADS = set.heads, HEAD_DIM = set.head_dim, SCALE = scale_of(set) })
  end
  return template.fill("kernel_set.cu.tmpl", {
    FILE = "vit_" .. set.name .. ".cu", SET = set.name, WIDTH = set.width, HEADS = set.heads,
    HEAD_DIM = set.head_dim, HIDDEN = set.hidden, RECIPES = table.concat(set.recipes, ", "),
    TABLE = table.concat(table_lines, "\n"), PRELUDE = template.read("cuda_prelude.cu.tmpl"),
    KERNELS = table.concat(kernels, "\n"),
  })
end

-- The training kernels (gen/ops_train.lua and the hand-written templates beside them): one
-- C file, its header and one CUDA file per build, whatever the recipes.
local train_hand_written_c = { "train_host.c.tmpl", "koleo.c.tmpl" }
local train_hand_written_cu = {
  { file = "koleo.cu.tmpl", kernels = { { "poa_train_koleo_normalize", "n", 256 },
                                        { "poa_train_koleo_neighbours", "n", 256 },
                                        { "poa_train_koleo_backward", "n", 256 } } },
}

function emit.train_c_text()
  local functions = {}
  for _, o in ipairs(c_ops_of_train_file()) do functions[#functions + 1] = lower_c.op(o[1], {}, o[2]) end
  for _, t in ipairs(train_hand_written_c) do functions[#functions + 1] = template.read(t) end
  return template.fill("train_kernels.c.tmpl", {
    FILE = "train_kernels.c", HAND_WRITTEN = table.concat(train_hand_written_c, ", "),
    FUNCTIONS = table.concat(functions, "\n"),
  })
end

function emit.train_h_text()
  local decls = {}
  for _, o in ipairs(c_ops_of_train_file()) do
    local op = o[1]
    decls[#decls + 1] = string.format("/* %s:\n%s */\nvoid %s(%s);\n", op.name, lower_c.math(op, "   "), op.name,
      lower_c.params(op))
  end
  return template.fill("train_kernels.h.tmpl", {
    FILE = "train_kernels.h", CHUNK = ops_train.CHUNK, DECLARATIONS = table.concat(decls, "\n"),
  })
end

-- The training kernels' texts and their launches in launch order: {name, grid = {x, y}, block = {x, y}},
-- expressions of n, rows, k, chunks and TRAIN_CHUNK.
local function train_kernels()
  local texts, list = {}, {}
  for _, name in ipairs(ops_train.order) do
    local text, kernels = lower_cuda.op(ops_train[name], {})
    texts[#texts + 1] = text
    for _, k in ipairs(kernels) do list[#list + 1] = k end
  end
  for _, t in ipairs(train_hand_written_cu) do
    texts[#texts + 1] = template.read(t.file)
    for _, k in ipairs(t.kernels) do list[#list + 1] = { name = k[1], grid = { k[2], 1 }, block = { k[3], 1 } } end
  end
  return texts, list
end

-- The glue kernels of templates/vit_glue.cu.tmpl by op, as emit.launches gives a set's (the GPU
-- schedule reads both), and those the runtime launches by name over n elements (runtime_glue):
-- one thread per element, 256 a block (the column sum: 8 lanes per 32 columns).
local function glue(name, elements)
  return { { name = "poa_glue_" .. name, module = "vit_glue.cu", grid = { "(" .. elements .. " + 255) / 256" },
             block = { "256" } } }
end
emit.glue_launches = {
  patchify = glue("patchify", "batch * channels * size * size"),
  fill_rows = glue("fill_rows", "rows * cols"),
  column_sum = { { name = "poa_glue_column_sum_accumulate", module = "vit_glue.cu", grid = { "(cols + 31) / 32" },
                   block = { "32", "8" } } },
  add = glue("add", "n"),
  copy = glue("copy", "n"),
  to_bf16 = glue("to_bf16", "rows * cols"),
}
local runtime_glue = { "fill", "gather_rows", "scatter_add_rows", "add_double", "scale" }

-- The kernels the runtime launches by name (runtime/program.h's poa_runtime_launches): the
-- training kernels and runtime_glue, {name, module, grid = 3 extents over n, rows, k or chunks
-- (gen/lower_cuda.lua), block = 3 integers}.
function emit.runtime_launches()
  local names, out = { n = "n", rows = "rows", k = "k", chunks = "chunks", TRAIN_CHUNK = ops_train.CHUNK }, {}
  local list = select(2, train_kernels())
  for _, name in ipairs(runtime_glue) do list[#list + 1] = glue(name, "n")[1] end
  for _, k in ipairs(list) do out[#out + 1] = lower_cuda.launch(k, names, k.module or "train_kernels.cu") end
  return out
end

function emit.train_cu_text()
  local kernels, list = train_kernels()
  local table_lines = {}
  table_lines_of(list, 34, table_lines)
  local names = {}
  for i, t in ipairs(train_hand_written_cu) do names[i] = t.file end
  return template.fill("train_kernels.cu.tmpl", {
    FILE = "train_kernels.cu", CHUNK = ops_train.CHUNK,
    HAND_WRITTEN = #names > 0 and table.concat(names, ", ") or "none hand-written",
    TABLE = table.concat(table_lines, "\n"),
    PRELUDE = template.read("cuda_prelude.cu.tmpl") .. "\n" .. template.read("train_prelude.cu.tmpl"),
    KERNELS = table.concat(kernels, "\n"),
  })
end

-- Declarations of the fused ops' C functions of every set (build/gen/vit_fused.h).
function emit.fused_h_text(sets)
  local decls = {}
  for _, set in ipairs(sets) do
    for _, name in ipairs(ops.fused_order) do
      local op = fused_c_op(name, set)
      decls[#decls + 1] = string.format("void %s(%s);\n", op.name, lower_c.params(op))
    end
  end
  return template.fill("vit_fused.h.tmpl", { DECLARATIONS = table.concat(decls) })
end

function emit.registry_text(loaded, sets)
  local decls, entries, names = {}, {}, {}
  for _, set in ipairs(sets) do
    decls[#decls + 1] = "extern const poa_vit_kernels poa_vit_kernels_" .. set.name .. ";\n"
    entries[#entries + 1] = "    &poa_vit_kernels_" .. set.name .. ",\n"
  end
  if #sets == 0 then entries[1] = "    NULL,\n" end
  for _, r in ipairs(loaded) do names[#names + 1] = r.name end
  return template.fill("registry.c.tmpl", {
    RECIPES = table.concat(names, ", "), DECLARATIONS = table.concat(decls),
    ENTRIES = table.concat(entries), COUNT = #sets,
  })
end

-- The space summary of a recipe and gen/space.lua's member table.
function emit.space_text(r)
  local head = string.format("%s: ViT family, widths %d..%d step %d, depths %d..%d step %d, head_dim %d, "
    .. "mlp_ratio %d\nkernel sets: %d (one per width; depths share them)\n\n", r.name, r.model.width[1],
    r.model.width[2], r.model.width[3], r.model.depth[1], r.model.depth[2], r.model.depth[3],
    r.model.head_dim, r.model.mlp_ratio, #widths_of(r.model))
  return head .. require("gen.space").list_text(r)
end

local README = [[
build/gen: written by gen/emit.lua from the recipes (recipes/*.lua, tests/recipes/*.lua);
do not edit, run ninja.
  vit_w<D>_h<Dh>_f<F>.c       the C kernel set for width D, head_dim Dh, MLP hidden F:
                              `const poa_vit_kernels poa_vit_kernels_w<D>_h<Dh>_f<F>`
                              (runtime/kernels.h), compiled into libpoa (fp32) and libpoa_f64
  vit_generic.c               the same ops for any shape, read at run time from the set
                              (poa_vit_kernels_generic_for): a width without a set runs it
  cuda/vit_w<D>_h<Dh>_f<F>.cu the same ops as CUDA kernels, compiled with NVRTC at start-up
  cuda/vit_glue.cu            templates/vit_glue.cu.tmpl and heads_kernels.cu.tmpl (hand-written) as
  cuda/heads_kernels.cu       the runtime fills them: listed for test_nvrtc_compile.c
  cuda/files.txt              the .cu files, one a line (tests/c/test_nvrtc_compile.c reads it)
  vit_fused.h                 the fused residual + LayerNorm ops of every set as extern C functions
                              poa_vit_residual_layernorm_{forward,backward}_<set>
  cuda/vit_fused.cu           the same as CUDA kernels residual_layernorm_{forward,backward}_<set>
  registry.c                  poa_vit_kernel_sets[] and poa_vit_kernels_find()
  train_kernels.c, .h         the training-step kernels (AdamW with the bf16 shadow, EMA, clipping,
                              softmax, cross-entropy, Sinkhorn-Knopp pieces, KoLeo) as C functions
  cuda/train_kernels.cu       the same as CUDA kernels (gen/ops_train.lua, templates/train_*)
  <recipe>/space.txt          the elastic space: widths, depths, members, kernel sets
Row-wise ops come from one description each (gen/ops.lua) lowered by gen/lower_c.lua and
gen/lower_cuda.lua; attention from templates/attention_*.tmpl.
]]

-- Every file of the build, in the order write() writes them: {kind ("c", "cu" or "text"),
-- path, text = a function making its text}. outputs() lists their paths by kind for ninja.
local function files(recipe_paths, outdir)
  local loaded, sets = emit.collect(recipe_paths)
  local names, list = {}, {}
  for _, r in ipairs(loaded) do names[#names + 1] = r.name end
  local function add(kind, name, text) list[#list + 1] = { kind = kind, path = outdir .. "/" .. name, text = text } end
  add("text", "README", function() return README end)
  add("text", "cuda/files.txt", function() -- the .cu files, one a line
    local cu = {}
    for _, f in ipairs(list) do if f.kind == "cu" then cu[#cu + 1] = f.path .. "\n" end end
    return table.concat(cu)
  end)
  add("c", "registry.c", function() return emit.registry_text(loaded, sets) end)
  add("c", "train_kernels.c", emit.train_c_text)
  add("c", "vit_generic.c", function() return emit.c_text(nil) end)
  add("text", "train_kernels.h", emit.train_h_text)
  add("text", "vit_fused.h", function() return emit.fused_h_text(sets) end)
  add("cu", "cuda/train_kernels.cu", emit.train_cu_text)
  add("cu", "cuda/vit_fused.cu", function() return emit.fused_cu_text(sets, names) end)
  for _, name in ipairs({ "vit_glue.cu", "heads_kernels.cu" }) do -- hand-written, as the runtime fills them
    add("cu", "cuda/" .. name, function() return template.fill(name .. ".tmpl", {}) end)
  end
  for _, set in ipairs(sets) do
    add("c", "vit_" .. set.name .. ".c", function() return emit.c_text(set) end)
    add("cu", "cuda/vit_" .. set.name .. ".cu", function() return emit.cu_text(set) end)
  end
  for _, r in ipairs(loaded) do add("text", r.name .. "/space.txt", function() return emit.space_text(r) end) end
  return list
end

function emit.outputs(recipe_paths, outdir)
  local out = { c = {}, cu = {}, text = {} }
  for _, f in ipairs(files(recipe_paths, outdir)) do table.insert(out[f.kind], f.path) end
  return out
end

function emit.write(recipe_paths, outdir)
  local made = {}
  for _, f in ipairs(files(recipe_paths, outdir)) do
    local dir = f.path:match("^(.*)/")
    if not made[dir] then os.execute("mkdir -p '" .. dir .. "'") end
    made[dir] = true
    local out = assert(io.open(f.path, "w"))
    out:write(f.text())
    out:close()
  end
end

-- Every CUDA module a run of the recipe at path loads, { {name, text}, ... }: the ViT kernel set
-- of each width of the family and vit_fused.cu, then what every GPU run loads (vit_glue.cu,
-- heads_kernels.cu, train_kernels.cu: the only ones with path nil). overrides: the run's
-- "section.field=value" lines, newline-separated. runtime/cuda_vit.c's poa_cuda_sources_load reads
-- it: the runtime compiles, `poa cuda warm` warms and the tests' emulator runs these very texts.
function emit.cuda_modules(path, overrides)
  local out = {}
  if path then
    local list = {}
    for line in (overrides or ""):gmatch("[^\n]+") do list[#list + 1] = line end
    local loaded, sets = emit.collect({ path }, list)
    if #loaded == 0 then error(path .. ": the family has no CUDA kernels (only vit has)", 0) end
    for i, set in ipairs(sets) do out[i] = { "vit_" .. set.name .. ".cu", emit.cu_text(set) } end
    out[#out + 1] = { "vit_fused.cu", emit.fused_cu_text(sets, { loaded[1].name }) }
  end
  out[#out + 1] = { "vit_glue.cu", template.fill("vit_glue.cu.tmpl", {}) }
  out[#out + 1] = { "heads_kernels.cu", template.fill("heads_kernels.cu.tmpl", {}) }
  out[#out + 1] = { "train_kernels.cu", emit.train_cu_text() }
  return out
end

if arg and arg[0] and arg[0]:match("gen/emit%.lua$") then
  local recipes = {}
  for i = 2, #arg do recipes[#recipes + 1] = arg[i] end
  local ok, err = pcall(emit.write, recipes, arg[1])
  if not ok then
    io.stderr:write("gen/emit.lua: " .. tostring(err) .. "\n")
    os.exit(1)
  end
end

return emit
