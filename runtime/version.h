/* version.h: what `poa --version` says of the build (build/version.c, tools/version.lua). */
#ifndef POA_VERSION_H
#define POA_VERSION_H

extern const char poa_version[];       /* git describe --always --dirty --tags of the source tree */
extern const char poa_build_options[]; /* compiler, flags, libraries, NVRTC headers found or not */

#endif
