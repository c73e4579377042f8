/* eval_family.h: what every evaluation command (poa knn, poa linear) does before it
   evaluates: the recipe (given, or the one a checkpoint was trained with, and its
   overrides), the family's members with their params and GFLOPs (gen/space.lua), the ones
   --nets selects, the teacher's backbone loaded from the checkpoint, and the labelled
   train/ and val/ folders of --data. */
#ifndef POA_EVAL_FAMILY_H
#define POA_EVAL_FAMILY_H

#include "data_folder.h"
#include "error.h"
#include "real.h"
#include "recipe.h"
#include "vit.h"

/* One member of the family, in gen/space.lua's order. */
typedef struct poa_eval_member {
    int width, depth;
    long long params;
    double gflops; /* one image at the global crop size */
    char name[32]; /* ViT-S, or WxD */
    int selected;
} poa_eval_member;

typedef struct poa_eval_options {
    const char *checkpoint, *recipe; /* recipe NULL: the checkpoint's own */
    const char *const *overrides;    /* section.field=value over the recipe */
    int override_count;
    const char *nets;                /* "all" or a list of members (S,B,L, WxD, W_D) */
} poa_eval_options;

/* A command-line word of an evaluation command that is not an option: the first is the
   checkpoint (*checkpoint), later ones section.field=value overrides (at most 64); anything
   else is an error that shows usage. */
int poa_eval_argument(const char *word, const char **checkpoint, const char **overrides, int *override_count,
                      const char *usage, poa_error *e);

typedef struct poa_eval_family {
    poa_recipe recipe;
    poa_vit model;
    real *params; /* the backbone, at full size */
    const char *prefix; /* the tensor-name prefix found in the checkpoint */
    poa_eval_member *members;
    int count;
    long step; /* the training step of a poa checkpoint, -1 for other files */
    unsigned long long seed; /* the recipe's train.seed: poa train's initialisation */
} poa_eval_family;

/* Loads the recipe, the members, the selection and the backbone; errors name the file,
   the field or the member. */
int poa_eval_family_open(poa_eval_family *f, const poa_eval_options *o, poa_error *e);
void poa_eval_family_free(poa_eval_family *f);

/* Draws the figures of an evaluation (plot.h) into out/<kind>_*.svg|png from the selected
   members and their values (% , one per member), with the raw-pixel baseline (%, <= 0: none)
   as a reference line, and prints the files written; a build without cairo says so and goes on. */
int poa_eval_plot(const char *out, const char *kind, const char *metric, const poa_eval_member *m,
                  const double *values, int count, double pixels, poa_error *e);

/* Opens data/train and data/val and checks they hold the same classes in the same order. */
int poa_eval_open_data(const char *data, poa_dataset *train, poa_dataset *val, poa_error *e);

#endif
