/* export_write.c: the files of an exported member (runtime/export.h):
     model.safetensors   the member's backbone under timm's or DINOv2's names (F32); metadata:
                         format = pt, export = poa-export-1, recipe, recipe_name, overrides,
                         checkpoint, source (teacher or student), step, member (WxD), width,
                         depth, block_ids (of the intact network), alpha, names, mean and std
                         (the normalisation the family was trained with, ImageNet's)
     config.json         timm's local-dir configuration: `timm.create_model("local-dir:DIR",
                         pretrained=True)` builds a VisionTransformer of the member's shape
                         (model_args) and loads model.safetensors into it
     heads.safetensors   (--heads) the projection heads sliced for the member, under poa's
                         head names (mlp{h}.0.weight, ..., last_layer{h}.weight_g/_v). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "augment.h"
#include "export.h"
#include "safetensors.h"

/* timm's VisionTransformer ties the MLP's biases to proj_bias and fixes LayerNorm's eps at
   1e-6. */
int poa_export_check(const poa_vit_config *c, poa_error *e) {
    if (c->proj_bias != c->ffn_bias)
        return poa_fail(e, "timm's VisionTransformer has one proj_bias for the attention projection and "
                           "the MLP; this family has proj_bias=%s, ffn_bias=%s",
                        c->proj_bias ? "true" : "false", c->ffn_bias ? "true" : "false");
    if (fabs(c->norm_eps - 1e-6) > 1e-12)
        return poa_fail(e, "timm's VisionTransformer uses LayerNorm eps 1e-6; this family has model.norm_eps=%g",
                        c->norm_eps);
    return 0;
}

static void three_numbers(char *out, size_t size, const float v[3]) {
    snprintf(out, size, "%g,%g,%g", (double)v[0], (double)v[1], (double)v[2]);
}

static int write_model(const char *path, const poa_export_info *info, const poa_vit *member, const real *params,
                       poa_error *e) {
    poa_safetensors_writer *w = poa_safetensors_writer_new();
    if (!w) return poa_fail(e, "%s: out of memory", path);
    int rc = 0;
    for (int i = 0; i < member->tensor_count && rc == 0; i++) {
        const poa_vit_tensor *t = &member->tensors[i];
        char name[POA_VIT_NAME_SIZE];
        if (poa_export_name(info->names, t->name, name, sizeof name))
            rc = poa_safetensors_writer_add_real(w, name, t->ndim, t->shape, params + t->offset, e);
    }
    char step[32], member_text[32], width[16], depth[16], alpha[32], ids[POA_VIT_MAX_DEPTH * 4 + 1] = "";
    char mean[64], std[64];
    snprintf(step, sizeof step, "%ld", info->step);
    snprintf(member_text, sizeof member_text, "%dx%d", info->width, info->depth);
    snprintf(width, sizeof width, "%d", info->width);
    snprintf(depth, sizeof depth, "%d", info->depth);
    snprintf(alpha, sizeof alpha, "%.9g", info->alpha);
    for (int j = 0; j < info->depth; j++)
        snprintf(ids + strlen(ids), sizeof ids - strlen(ids), "%s%d", j ? "," : "", info->block_ids[j]);
    three_numbers(mean, sizeof mean, poa_imagenet_mean);
    three_numbers(std, sizeof std, poa_imagenet_std);
    const char *keys[] = { "format", "export", "recipe", "recipe_name", "overrides", "checkpoint", "source",
                           "step", "member", "width", "depth", "block_ids", "alpha", "names", "mean", "std" };
    const char *values[] = { "pt", POA_EXPORT_FORMAT, info->recipe_path, info->recipe_name, info->overrides,
                             info->checkpoint, info->source, step, member_text, width, depth, ids, alpha,
                             poa_export_names_text(info->names), mean, std };
    for (int i = 0; i < (int)(sizeof keys / sizeof keys[0]) && rc == 0; i++)
        rc = poa_safetensors_writer_metadata(w, keys[i], values[i] ? values[i] : "", e);
    if (rc == 0) rc = poa_safetensors_writer_save(w, path, e);
    poa_safetensors_writer_free(w);
    return rc;
}

static int write_heads(const char *path, const poa_export_info *info, const poa_heads *heads, const real *params,
                       poa_error *e) {
    poa_safetensors_writer *w = poa_safetensors_writer_new();
    if (!w) return poa_fail(e, "%s: out of memory", path);
    int rc = 0;
    for (int i = 0; i < heads->tensor_count && rc == 0; i++) {
        const poa_vit_tensor *t = &heads->tensors[i];
        rc = poa_safetensors_writer_add_real(w, t->name, t->ndim, t->shape, params + t->offset, e);
    }
    char member_text[32];
    snprintf(member_text, sizeof member_text, "%dx%d", info->width, info->depth);
    if (rc == 0) rc = poa_safetensors_writer_metadata(w, "format", "pt", e);
    if (rc == 0) rc = poa_safetensors_writer_metadata(w, "member", member_text, e);
    if (rc == 0) rc = poa_safetensors_writer_metadata(w, "source", info->source, e);
    if (rc == 0) rc = poa_safetensors_writer_save(w, path, e);
    poa_safetensors_writer_free(w);
    return rc;
}

/* config.json as timm's hub export writes it (architecture, num_classes, num_features,
   global_pool, model_args, pretrained_cfg). The architecture only picks timm's
   VisionTransformer builder: model_args set every shape. */
static void print_config(FILE *f, const poa_vit_config *c) {
    const int heads = c->max_width / c->head_dim, size = c->image_size;
    char init_values[32] = "null";
    if (c->layerscale != 0) snprintf(init_values, sizeof init_values, "%.9g", c->layerscale);
    fprintf(f,
            "{\n"
            "  \"architecture\": \"vit_base_patch16_224\",\n"
            "  \"num_classes\": 0,\n"
            "  \"num_features\": %d,\n"
            "  \"global_pool\": \"token\",\n"
            "  \"model_args\": {\n"
            "    \"img_size\": %d, \"patch_size\": %d, \"in_chans\": %d,\n"
            "    \"embed_dim\": %d, \"depth\": %d, \"num_heads\": %d, \"mlp_ratio\": %d.0,\n"
            "    \"qkv_bias\": %s, \"proj_bias\": %s, \"init_values\": %s,\n"
            "    \"class_token\": true, \"no_embed_class\": false, \"reg_tokens\": 0, \"pre_norm\": false,\n"
            "    \"final_norm\": true, \"fc_norm\": false, \"global_pool\": \"token\", \"num_classes\": 0,\n"
            "    \"dynamic_img_size\": false\n"
            "  },\n",
            c->max_width, size, c->patch_size, c->in_channels, c->max_width, c->max_depth, heads, c->mlp_ratio,
            c->qkv_bias ? "true" : "false", c->proj_bias ? "true" : "false", init_values);
    fprintf(f,
            "  \"pretrained_cfg\": {\n"
            "    \"tag\": \"poa\", \"custom_load\": false,\n"
            "    \"input_size\": [%d, %d, %d], \"fixed_input_size\": true,\n"
            "    \"interpolation\": \"bicubic\", \"crop_pct\": 0.875, \"crop_mode\": \"center\",\n"
            "    \"mean\": [%g, %g, %g], \"std\": [%g, %g, %g],\n"
            "    \"num_classes\": 0, \"pool_size\": null, \"first_conv\": \"patch_embed.proj\", "
            "\"classifier\": \"head\"\n"
            "  }\n"
            "}\n",
            c->in_channels, size, size, (double)poa_imagenet_mean[0], (double)poa_imagenet_mean[1],
            (double)poa_imagenet_mean[2], (double)poa_imagenet_std[0], (double)poa_imagenet_std[1],
            (double)poa_imagenet_std[2]);
}

/* Written to path.tmp, then renamed: a failed export leaves no half file. */
static int write_config(const char *path, const poa_vit_config *c, poa_error *e) {
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) return poa_fail(e, "%s: cannot write", tmp);
    print_config(f, c);
    int bad = ferror(f) != 0;
    bad |= fclose(f) != 0;
    if (bad || rename(tmp, path) != 0) {
        remove(tmp);
        return poa_fail(e, "%s: cannot write", path);
    }
    return 0;
}

int poa_export_write(const char *dir, const poa_export_info *info, const poa_vit *member, const real *params,
                     const poa_heads *heads, const real *head_params, poa_error *e) {
    char model_path[4096], config_path[4096], heads_path[4096];
    snprintf(model_path, sizeof model_path, "%s/model.safetensors", dir);
    snprintf(config_path, sizeof config_path, "%s/config.json", dir);
    snprintf(heads_path, sizeof heads_path, "%s/heads.safetensors", dir);
    if (poa_export_check(&member->config, e)) return -1;
    if (write_model(model_path, info, member, params, e)) return -1;
    if (write_config(config_path, &member->config, e)) return -1;
    if (heads && write_heads(heads_path, info, heads, head_params, e)) return -1;
    return 0;
}
