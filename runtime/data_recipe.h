/* data_recipe.h: a recipe's crops and augmentation switches as a loader configuration. */
#ifndef POA_DATA_RECIPE_H
#define POA_DATA_RECIPE_H

#include "data_loader.h"
#include "recipe.h"

/* Reference defaults (poa_loader_config_default), then the recipe's global and local crop
   counts, sizes and scales and its augment.blur switch. */
void poa_loader_config_from_recipe(poa_loader_config *c, const poa_recipe *r,
                                   const poa_dataset *dataset, int batch_size);

#endif
