-- gen/ops_runtime.lua: the runtime kernels of gen/graph.lua that are not ViT ops but layout
-- (patchify, fill_rows), described in the IR of gen/ir.lua with the C parameters of
-- graph.runtime_kernels, so that an exported program (gen/export_c.lua) gets them from the
-- generator like every other kernel. The build lowers them once more as poa_patchify and
-- poa_fill_rows (build/gen/train_kernels.c), which runtime/program.c's CPU runner and the
-- heads call.
local ir = require("gen.ir")
local graph = require("gen.graph")
local V, L, select, present = ir.var, ir.load, ir.select, ir.present

local ops = {}
ops.order = { "patchify", "fill_rows" }

-- patches[b*N + gy*G + gx][c*P*P + ky*P + kx] = images[b][c][gy*P + ky][gx*P + kx], G = size / P:
-- one row per (b, gy, gx, c, ky), its P columns kx; with size = G * P the image element is
-- row ((b*C + c)*size + gy*P + ky)*G + gx of P elements.
do
  local b, gy, gx, c, ky, P, G, C = V("b"), V("gy"), V("gx"), V("c"), V("ky"), V("patch"), V("grid"), V("channels")
  ops.patchify = ir.op({
    name = "patchify",
    math = { "patches[b*N + gy*G + gx][c*P*P + ky*P + kx] = images[b][c][gy*P + ky][gx*P + kx], G = size / P" },
    params = graph.runtime_kernels.patchify.params,
    tensors = { patches = ir.rows("patch"), images = ir.rows("patch") },
    length = P, prelude = { { "grid", V("size") / P } },
    loops = { { "b", "batch" }, { "gy", "grid" }, { "gx", "grid" }, { "c", "channels" }, { "ky", "patch" } },
    row = (((b * G + gy) * G + gx) * C + c) * P + ky,
    stages = { ir.map("patches", L("images", ((b * C + c) * V("size") + gy * P + ky) * G + gx)) },
  })
end

-- Every row of y (rows x cols, rows ld apart) = vec, or 0 when vec is NULL (a bias).
ops.fill_rows = ir.op({
  name = "fill_rows",
  math = { "y[r, :cols] = vec (0 when vec is NULL), rows ld apart" },
  params = graph.runtime_kernels.fill_rows.params,
  tensors = { y = ir.rows("ld"), vec = ir.vector() }, optional = { "vec" },
  length = V("cols"),
  stages = { ir.map("y", select(present("vec"), L("vec"), 0.0)) },
})

return ops
