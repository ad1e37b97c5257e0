/* Python-style argument binding for C functions and methods.
 *
 * The stdlib's functions are Python functions: a call with the wrong
 * arguments raises the interpreter's own TypeError.  METH_FASTCALL |
 * METH_KEYWORDS functions that take their parameters positionally or by
 * keyword bind them here, with the same messages. */
#include "cfutures.h"

/* "'a'", "'a' and 'b'", "'a', 'b', and 'c'", as ceval.c lists them. */
static PyObject *
name_list(const char *const *names, Py_ssize_t n)
{
    PyObject *s = PyUnicode_FromString("");
    for (Py_ssize_t i = 0; s != NULL && i < n; i++) {
        const char *sep = i == 0 ? ""
                          : i < n - 1 ? ", "
                          : n == 2 ? " and " : ", and ";
        PyObject *more = PyUnicode_FromFormat("%U%s'%s'", s, sep, names[i]);
        Py_SETREF(s, more);
    }
    return s;
}

static void
missing_error(const char *fname, const char *const *names, Py_ssize_t n)
{
    PyObject *list = name_list(names, n);
    if (list != NULL) {
        PyErr_Format(PyExc_TypeError,
                     "%s() missing %zd required positional argument%s: %U",
                     fname, n, n == 1 ? "" : "s", list);
        Py_DECREF(list);
    }
}

int
cf_bind_args(const char *fname, const char *const *names, Py_ssize_t nreq,
             Py_ssize_t nmax, int is_method, PyObject *const *args,
             Py_ssize_t nargs, PyObject *kwnames, PyObject **out)
{
    for (Py_ssize_t i = 0; i < nmax; i++) {
        out[i] = NULL;
    }
    if (nargs > nmax) {
        /* A method counts self, as Python's own message does. */
        Py_ssize_t given = nargs + is_method;
        if (nreq < nmax) {
            PyErr_Format(PyExc_TypeError,
                         "%s() takes from %zd to %zd positional arguments "
                         "but %zd were given", fname, nreq + is_method,
                         nmax + is_method, given);
        }
        else {
            Py_ssize_t takes = nmax + is_method;
            PyErr_Format(PyExc_TypeError,
                         "%s() takes %zd positional argument%s but %zd %s "
                         "given", fname, takes, takes == 1 ? "" : "s",
                         given, given == 1 ? "was" : "were");
        }
        return -1;
    }
    for (Py_ssize_t i = 0; i < nargs; i++) {
        out[i] = args[i];
    }
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    for (Py_ssize_t k = 0; k < nkw; k++) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, k);
        Py_ssize_t j = 0;
        while (j < nmax
               && PyUnicode_CompareWithASCIIString(key, names[j]) != 0) {
            j++;
        }
        if (j == nmax) {
            PyErr_Format(PyExc_TypeError,
                         "%s() got an unexpected keyword argument '%S'",
                         fname, key);
            return -1;
        }
        if (out[j] != NULL) {
            PyErr_Format(PyExc_TypeError,
                         "%s() got multiple values for argument '%s'",
                         fname, names[j]);
            return -1;
        }
        out[j] = args[nargs + k];
    }
    const char *missing[8];
    Py_ssize_t nmissing = 0;
    for (Py_ssize_t i = 0; i < nreq && nmissing < 8; i++) {
        if (out[i] == NULL) {
            missing[nmissing++] = names[i];
        }
    }
    if (nmissing) {
        missing_error(fname, missing, nmissing);
        return -1;
    }
    return 0;
}
