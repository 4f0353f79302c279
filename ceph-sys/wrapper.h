/* librbd.h includes librados.h; both come from Debian's librbd-dev and librados-dev. */
#include <rados/librados.h>
#include <rbd/librbd.h>
