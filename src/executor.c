/* Placeholder until this concept lands. */
#include "cfutures.h"

int
cf_executor_setup(PyObject *module, cf_state *st)
{
    return 0;
}
