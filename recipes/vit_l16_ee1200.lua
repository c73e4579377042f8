-- recipes/vit_l16_ee1200.lua: the paper's ViT-L/16 run (reference §0, vit_ee1200.yaml):
-- 143 members, widths 384..1024 step 64, depths 12..24, 2 x 224 + 8 x 96 crops.
return {
  name = "vit_l16_ee1200",
  model = {
    family = "vit",
    patch_size = 16,
    head_dim = 64,
    width = { 384, 1024, 64 },
    depth = { 12, 24, 1 },
    mlp_ratio = 4,
    layerscale = 1e-5,
    drop_path_rate = 0.2,
    net_select_scale = 3,
  },
  global_crops = { count = 2, size = 224, scale = { 0.32, 1.0 } },
  local_crops = { count = 8, size = 96, scale = { 0.05, 0.32 } },
  -- The official run (reference §0). Every field not given takes gen/training.lua's default,
  -- which is this run's value; they are spelled out here so the recipe reads as the config.
  heads = { prototypes = { 8192, 16384, 32768, 65536 }, hidden = 2048, bottleneck = 256 },
  loss = { dino_weight = 1.0, koleo_weight = 0.1, ibot_weight = 1.0, lambda = 0.8 },
  ibot = { mask_probability = 0.5, mask_ratio = { 0.1, 0.5 }, activate_epochs = 30 },
  teacher = { momentum = 0.992, final_momentum = 0.9999, warmup_temp = 0.04, temp = 0.07,
              warmup_temp_epochs = 30 },
  optim = { epochs = 346, base_lr = 0.004, lr_rule = "sqrt_wrt_1024", min_lr = 2e-5,
            warmup_epochs = 10, weight_decay = 0.04, weight_decay_end = 0.4, clip_grad = 1.5,
            freeze_last_layer_epochs = 1, patch_embed_lr_mult = 0.2, layerwise_decay = 0.9,
            iter_num_scale = 0.78 },
  -- 50 images per GPU on 32 GPUs: global batch 1600 (on fewer GPUs, raise train.accumulate).
  train = { batch_size = 50, official_epoch_length = 800 },
  data = { train = "imagenet/train", val = "imagenet/val" },
}
