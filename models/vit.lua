-- models/vit.lua: the elastic ViT family as data (reference poa-vit-and-training.md §1).
-- A recipe's `model` table names this family (family = "vit") and overrides any field.
-- width and depth are {min, max, step}; the intact network is (width.max, depth.max).
return {
  family = "vit",
  patch_size = 16,         -- square patches, conv kernel = stride
  in_channels = 3,
  head_dim = 64,           -- heads = width / head_dim
  width = { 384, 1024, 64 },
  depth = { 12, 24, 1 },
  mlp_ratio = 4,           -- MLP hidden = mlp_ratio * width
  layerscale = 1e-5,       -- LayerScale init (gamma); 0 disables LayerScale
  qkv_bias = true,
  proj_bias = true,
  ffn_bias = true,
  drop_path_rate = 0.2,    -- student only, uniform over blocks, exact keep count
  norm_eps = 1e-6,
  net_select_scale = 3,    -- S_w = S_d of the sampling weights (reference §3.2)
  named = {                -- members with a name (reference §1.8)
    { name = "ViT-S", width = 384, depth = 12 },
    { name = "ViT-B", width = 768, depth = 12 },
    { name = "ViT-L", width = 1024, depth = 24 },
  },
}
