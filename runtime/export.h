/* export.h: one member of a trained family taken out as a plain network (`poa export`,
   --what weights). Its weights are the prefix slices of the intact ones that the elastic
   forward reads (reference poa-vit-and-training.md §1.3: qkv rows [0:D] of each of q, k, v,
   linear weights [:out, :in], LayerNorm, LayerScale, tokens and the patch conv's first D
   channels), with alpha = Dmax / D multiplied into every linear weight (biases unscaled), the
   member's blocks (gen/space.lua's block ids, as a layout pass of poa_vit_pass_init computes them)
   renumbered 0..L-1, and the final LayerNorm included (DESIGN.md "Numerical contract" 8; the official
   tool drops it, §7.1). The member is then the intact network of a ViT of the same recipe
   with max_width = D and max_depth = L, whose forward (alpha 1, every block) is the member's.
   Heads, when asked for, are sliced the same way: the first layer's input columns [:D] times
   alpha, the rest verbatim.

   Files (runtime/export_write.c): model.safetensors under timm's VisionTransformer names
   (reference formats-and-platform.md §3.1) or DINOv2's (§3.2: the same plus mask_token),
   metadata in its header; config.json for timm's `local-dir:` loading; heads.safetensors. */
#ifndef POA_EXPORT_H
#define POA_EXPORT_H

#include <stddef.h>

#include "error.h"
#include "head.h"
#include "real.h"
#include "vit.h"

#define POA_EXPORT_FORMAT "poa-export-1"

typedef enum poa_export_names { POA_EXPORT_TIMM, POA_EXPORT_DINOV2 } poa_export_names;

/* "timm" or "dinov2" -> *names; fails naming the text otherwise. */
int poa_export_names_parse(const char *text, poa_export_names *names, poa_error *e);
const char *poa_export_names_text(poa_export_names names);

/* The exported name of a backbone tensor (poa's state-dict name, e.g.
   blocks.3.attn.qkv.linear.weight -> blocks.3.attn.qkv.weight, norm.norm.bias -> norm.bias);
   returns 0 when the tensor is not part of that naming (mask_token under timm's), else 1. */
int poa_export_name(poa_export_names names, const char *name, char *out, size_t size);

/* The ViT whose intact network is member width x depth of the family. */
void poa_export_member_config(const poa_vit_config *family, int width, int depth, poa_vit_config *member);

/* The member's backbone parameters (member: poa_vit_init of poa_export_member_config) from
   the intact network's; out has member->parameter_count values. */
int poa_export_slice_backbone(const poa_vit *intact, const real *params, const poa_vit *member, real *out,
                              poa_error *e);

/* The member's heads (member: the heads with in_dim = the member's width). */
int poa_export_slice_heads(const poa_heads *intact, const real *params, const poa_heads *member, real *out,
                           poa_error *e);

/* What the files' metadata records. */
typedef struct poa_export_info {
    const char *recipe_name, *recipe_path, *overrides, *checkpoint, *source; /* source: teacher|student */
    long step;
    int width, depth;
    int block_ids[POA_VIT_MAX_DEPTH]; /* of the intact network */
    double alpha;
    poa_export_names names;
} poa_export_info;

/* Whether config.json can describe the member (timm's VisionTransformer ties the MLP's
   biases to proj_bias, its LayerNorm eps is 1e-6); fails saying what differs. */
int poa_export_check(const poa_vit_config *member, poa_error *e);

/* Writes DIR/model.safetensors, DIR/config.json and, when heads is not NULL,
   DIR/heads.safetensors (the folder must exist). */
int poa_export_write(const char *dir, const poa_export_info *info, const poa_vit *member, const real *params,
                     const poa_heads *heads, const real *head_params, poa_error *e);

/* Writes into dir the member's standalone program, what = "c", "cuda" or "all" (gen/export_c.lua:
   poa_member.h, poa_member.c and/or poa_member.cu, main.c, Makefile and the runtime files it
   carries) for images of the given sizes, reading the model.safetensors of poa_export_write;
   *written gets the file names. */
int poa_export_program(const char *dir, const char *what, const poa_export_info *info, const poa_vit *member,
                       const int *sizes,
                       int size_count, char *written, size_t written_size, poa_error *e);

/* The parameters a member's forward reads from `path`: a state dict or checkpoint of the
   intact network (poa_vit_load_parameters; *model is the family's ViT), or a
   model.safetensors of `poa export` (*model is the member's ViT). The export must hold
   member width x depth; *has_mask_token is 0 for an export under timm's names (no mask
   token: its forward takes no masks). */
int poa_export_open_parameters(const poa_vit_config *family, int width, int depth, const char *path,
                               poa_vit *model, real **params, int *has_mask_token, poa_error *e);

#endif
