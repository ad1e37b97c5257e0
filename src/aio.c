/* Placeholder until the asyncio bridge lands. */
#include "cfutures.h"

PyObject *
cf_future_await(PyObject *self)
{
    PyErr_SetString(PyExc_NotImplementedError, "await is not implemented yet");
    return NULL;
}

int
cf_aio_setup(PyObject *module, cf_state *st)
{
    return 0;
}
