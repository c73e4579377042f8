-- recipes/small_vit.lua: a small ViT family for CPU runs and benchmarks:
-- widths 128..256 step 64 (2-4 heads of 64), depths 3..6, patch 16, 64 px global and
-- 32 px local crops (4x4 and 2x2 patches).
return {
  name = "small_vit",
  model = {
    family = "vit",
    patch_size = 16,
    head_dim = 64,
    width = { 128, 256, 64 },
    depth = { 3, 6, 1 },
    mlp_ratio = 4,
    layerscale = 1e-5,
    drop_path_rate = 0.1,
    net_select_scale = 3,
    named = {},
  },
  global_crops = { count = 2, size = 64, scale = { 0.32, 1.0 } },
  local_crops = { count = 4, size = 32, scale = { 0.05, 0.32 } },
}
