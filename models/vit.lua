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
  -- A member's forward (reference §1.2) as a graph (gen/graph.lua), the one description of the
  -- layer order: patch embedding, mask tokens, cls, position embedding (resampled off the
  -- native grid), the member's blocks (intact ids m.block_ids, prefix slices of the full
  -- weights with alpha = Dmax / D), the final LayerNorm. Value names are the arena's.
  forward = function(g, m)
    local D, F, Dmax, Fmax, alpha = m.width, m.hidden, m.max_width, m.max_hidden, m.alpha
    local drop = g:input("drop_scale")
    local patches = g:patchify("patches", g:input("images"))
    -- the conv's first D output channels; no alpha (its input is the image)
    local tokens = g:linear({ name = "patch_tokens", x = patches, weight = g:param("patch_embed.proj.weight", m.patch_len),
                              bias = g:param("patch_embed.proj.bias"), n = D, k = m.patch_len, alpha = 1 })
    local pos, pos_ld = g:position_table("pos", g:param("pos_embed", Dmax))
    local x = g:tokens({ name = m.depth > 0 and "block0.x_in" or "x_final", patch = tokens, cls = g:param("cls_token"),
                         mask_token = g:param("mask_token"), pos = pos, pos_ld = pos_ld,
                         mask = g:input("mask", "u8") })
    for j = 0, m.depth - 1 do
      local p, b = "blocks." .. m.block_ids[j] .. ".", "block" .. j .. "."
      local function linear(name, input, weight, bias, n, k, ldw, groups)
        return g:linear({ name = b .. name, x = input, weight = g:param(p .. weight, ldw), bias = bias and g:param(p .. bias),
                          n = n, k = k, alpha = alpha, groups = groups, group_stride = groups and Dmax })
      end
      local ln1 = g:layernorm({ x = x, weight = g:param(p .. "norm1.norm.weight"), bias = g:param(p .. "norm1.norm.bias"),
                                y = b .. "ln1", mean = b .. "ln1_mean", rstd = b .. "ln1_rstd" })
      -- q, k, v: rows g*Dmax .. g*Dmax + D of the full weight
      local qkv = linear("qkv", ln1, "attn.qkv.linear.weight", m.qkv_bias and "attn.qkv.linear.bias", D, D, Dmax, 3)
      local attn = g:attention({ qkv = qkv, out = b .. "attn", probs = b .. "probs" })
      local h1 = linear("h1", attn, "attn.proj.linear.weight", m.proj_bias and "attn.proj.linear.bias", D, D, Dmax)
      local x_mid = g:residual({ name = b .. "x_mid", x = x, h = h1, gamma = m.layerscale and g:param(p .. "ls1.gamma"),
                                 scale = g:at(drop, { b = 2 * j, c = 0 }) })
      local ln2 = g:layernorm({ x = x_mid, weight = g:param(p .. "norm2.norm.weight"), bias = g:param(p .. "norm2.norm.bias"),
                                y = b .. "ln2", mean = b .. "ln2_mean", rstd = b .. "ln2_rstd" })
      local u = linear("u", ln2, "mlp.fc1.linear.weight", m.ffn_bias and "mlp.fc1.linear.bias", F, D, Dmax)
      local h2 = linear("h2", g:gelu(b .. "g", u), "mlp.fc2.linear.weight", m.ffn_bias and "mlp.fc2.linear.bias", D, F, Fmax)
      x = g:residual({ name = j + 1 < m.depth and ("block" .. (j + 1) .. ".x_in") or "x_final", x = x_mid, h = h2,
                       gamma = m.layerscale and g:param(p .. "ls2.gamma"), scale = g:at(drop, { b = 2 * j + 1, c = 0 }) })
    end
    g:output(g:layernorm({ x = x, weight = g:param("norm.norm.weight"), bias = g:param("norm.norm.bias"),
                           y = "out", mean = "norm_mean", rstd = "norm_rstd" }))
  end,
}
