/* The asyncio bridge: `await future`, batched loop wakeups, to_thread.
 *
 * DESIGN.md, contract 5.  Awaiting a finished future returns at once and
 * never touches the loop.  A pending one is bridged to a future of the
 * awaiting loop (loop.create_future()), which the Task waits on.  When the
 * cfutures future completes, its completing thread posts the bridge into
 * the loop's batch; the first post into an empty batch schedules one
 * loop.call_soon_threadsafe(batch), and the flush, on the loop thread,
 * resolves every loop future of the burst.  asyncio.wrap_future pays one
 * call_soon_threadsafe (a self-pipe write and a loop wakeup) per future and
 * a chain of Python callbacks; here a burst of N completions costs one.
 *
 * Nodes (awaiters and to_thread calls) share a header: the loop future
 * they resolve, their batch, and an intrusive link for the batch's queue.
 * The loop future is only a wakeup: it is resolved with None, and the
 * woken iterator reads the outcome from where it lives (the cfutures
 * future, or the to_thread call), so several awaiters on several loops
 * each get their own wakeup and the same outcome.
 *
 * Batches are found through a per-thread cache (the thread state dict)
 * holding the batch of the loop last awaited on in that thread: a loop
 * runs in one thread at a time, so this is one batch per loop in practice.
 */
#include "cfutures.h"

#include <structmember.h>

/* ---- shared node header and the batch ------------------------------- */

typedef struct cf_batch cf_batch;

typedef struct cf_aionode {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *loop_future;        /* what the Task waits on; NULL detached */
    cf_batch *batch;              /* where completions are posted */
    struct cf_aionode *next;      /* link while queued in a batch */
    unsigned char queued;
} cf_aionode;

struct cf_batch {
    PyObject_HEAD
    vectorcallfunc vectorcall;    /* the flush, run by the loop */
    PyObject *loop_ref;           /* weak reference to the loop */
    unsigned long thread_id;      /* the thread the loop ran in */
    cf_aionode *head;             /* queued nodes, strong references */
    cf_aionode *tail;
    int scheduled;                /* a flush is on its way to the loop */
};

static PyObject *
batch_loop(cf_batch *b)
{
    PyObject *loop = PyWeakref_GET_OBJECT(b->loop_ref);
    return loop == Py_None ? NULL : loop;   /* borrowed */
}

/* Import what the bridge needs from asyncio on first use, so importing
 * cfutures does not import asyncio. */
static int
aio_import(cf_state *st)
{
    if (st->get_running_loop != NULL) {
        return 0;
    }
    PyObject *events = PyImport_ImportModule("asyncio.events");
    if (events == NULL) {
        return -1;
    }
    PyObject *grl = PyObject_GetAttrString(events, "_get_running_loop");
    Py_DECREF(events);
    if (grl == NULL) {
        return -1;
    }
    PyObject *exc = PyImport_ImportModule("asyncio.exceptions");
    if (exc == NULL) {
        Py_DECREF(grl);
        return -1;
    }
    PyObject *ce = PyObject_GetAttrString(exc, "CancelledError");
    PyObject *ise = PyObject_GetAttrString(exc, "InvalidStateError");
    Py_DECREF(exc);
    if (ce == NULL || ise == NULL) {
        Py_XDECREF(ce);
        Py_XDECREF(ise);
        Py_DECREF(grl);
        return -1;
    }
    Py_XSETREF(st->asyncio_CancelledError, ce);
    Py_XSETREF(st->asyncio_InvalidStateError, ise);
    Py_XSETREF(st->get_running_loop, grl);
    return 0;
}

/* The running loop of this thread (new ref), or NULL with RuntimeError. */
static PyObject *
running_loop(cf_state *st)
{
    if (aio_import(st) < 0) {
        return NULL;
    }
    PyObject *loop = PyObject_CallNoArgs(st->get_running_loop);
    if (loop == Py_None) {
        Py_DECREF(loop);
        PyErr_SetString(PyExc_RuntimeError, "no running event loop");
        return NULL;
    }
    return loop;
}

/* Resolve a node's loop future with None: the Task wakes and asks the
 * node for the outcome.  A cancelled loop future is skipped (the awaiting
 * task was cancelled; it already woke with CancelledError). */
static void
wake_node(cf_state *st, cf_aionode *node)
{
    PyObject *lf = node->loop_future;
    if (lf == NULL) {
        return;                   /* detached: the awaiter went away */
    }
    Py_INCREF(lf);
    PyObject *args[2] = {lf, Py_None};
    PyObject *r = PyObject_VectorcallMethod(
        st->str_set_result, args, 2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    if (r == NULL) {
        if (st->asyncio_InvalidStateError != NULL
            && PyErr_ExceptionMatches(st->asyncio_InvalidStateError)) {
            PyErr_Clear();        /* cancelled meanwhile */
        }
        else {
            PyErr_WriteUnraisable(lf);
        }
    }
    Py_XDECREF(r);
    Py_DECREF(lf);
}

/* Unlink every queued node (the caller owns their references). */
static cf_aionode *
batch_take(cf_batch *b)
{
    cf_aionode *head;
    CF_BEGIN_CRITICAL(b)
    head = b->head;
    b->head = b->tail = NULL;
    b->scheduled = 0;
    CF_END_CRITICAL()
    return head;
}

static void
release_nodes(cf_aionode *node)
{
    while (node != NULL) {
        cf_aionode *next = node->next;
        node->next = NULL;
        node->queued = 0;
        Py_DECREF(node);
        node = next;
    }
}

/* batch(): the flush, run on the loop thread by call_soon(_threadsafe). */
static PyObject *
batch_flush(PyObject *self, PyObject *const *args, size_t nargsf,
            PyObject *kwnames)
{
    cf_batch *b = (cf_batch *)self;
    cf_state *st = PyType_GetModuleState(Py_TYPE(self));
    /* Taken first: completions posted while we resolve (set_result may
     * switch threads) schedule the next flush. */
    cf_aionode *node = batch_take(b);
    while (node != NULL) {
        cf_aionode *next = node->next;
        node->next = NULL;
        node->queued = 0;
        wake_node(st, node);
        Py_DECREF(node);
        node = next;
    }
    Py_RETURN_NONE;
}

/* Post a completed node to its loop, from any thread, GIL held.  Never
 * raises: it runs inside a future's done-callbacks or a worker. */
static void
batch_post(cf_aionode *node)
{
    cf_batch *b = node->batch;
    if (b == NULL || node->loop_future == NULL) {
        return;                   /* detached */
    }
    PyObject *loop = batch_loop(b);
    if (loop == NULL) {
        return;                   /* the loop is gone; nobody can wake */
    }
    cf_state *st = PyType_GetModuleState(Py_TYPE(b));
    if (b->thread_id == PyThread_get_thread_ident()) {
        /* Completed on the loop's own thread while it runs there (e.g. by
         * another coroutine): resolve now, no self-pipe write.  asyncio
         * runs the loop future's callbacks on a later turn anyway. */
        PyObject *cur = PyObject_CallNoArgs(st->get_running_loop);
        if (cur == NULL) {
            PyErr_WriteUnraisable(NULL);
            return;
        }
        Py_DECREF(cur);
        if (cur == loop) {
            Py_INCREF(b);
            wake_node(st, node);
            Py_DECREF(b);
            return;
        }
    }
    int schedule;
    Py_INCREF(b);
    CF_BEGIN_CRITICAL(b)
    if (!node->queued) {
        node->queued = 1;
        Py_INCREF(node);
        if (b->tail == NULL) {
            b->head = node;
        }
        else {
            b->tail->next = node;
        }
        b->tail = node;
    }
    schedule = !b->scheduled;
    b->scheduled = 1;
    CF_END_CRITICAL()
    if (schedule) {
        /* One wakeup per burst: later posts see `scheduled` and only
         * queue.  The flush may even run before this call returns. */
        Py_INCREF(loop);
        PyObject *args[2] = {loop, (PyObject *)b};
        PyObject *r = PyObject_VectorcallMethod(
            st->str_call_soon_threadsafe, args,
            2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
        Py_DECREF(loop);
        if (r == NULL) {
            /* The loop is closed (RuntimeError), as wrap_future's
             * callback finds it: the awaiters cannot be woken, the
             * cfutures futures complete as usual; drop what was queued
             * for this loop so nothing leaks. */
            if (PyErr_ExceptionMatches(PyExc_RuntimeError)) {
                PyErr_Clear();
            }
            else {
                PyErr_WriteUnraisable((PyObject *)b);
            }
            release_nodes(batch_take(b));
        }
        Py_XDECREF(r);
    }
    Py_DECREF(b);
}

static int
batch_traverse(cf_batch *b, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(b));
    Py_VISIT(b->loop_ref);
    for (cf_aionode *n = b->head; n != NULL; n = n->next) {
        Py_VISIT(n);
    }
    return 0;
}

static int
batch_clear(cf_batch *b)
{
    Py_CLEAR(b->loop_ref);
    release_nodes(batch_take(b));
    return 0;
}

static void
batch_dealloc(cf_batch *b)
{
    PyTypeObject *tp = Py_TYPE(b);
    PyObject_GC_UnTrack(b);
    batch_clear(b);
    tp->tp_free((PyObject *)b);
    Py_DECREF(tp);
}

static PyObject *
batch_repr(cf_batch *b)
{
    int n = 0;
    for (cf_aionode *node = b->head; node != NULL; node = node->next) {
        n++;
    }
    return PyUnicode_FromFormat("<cfutures batch at %p queued=%d>", b, n);
}

static PyMemberDef batch_members[] = {
    {"__vectorcalloffset__", T_PYSSIZET, offsetof(cf_batch, vectorcall),
     READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot batch_slots[] = {
    {Py_tp_doc, "The wakeups of one event loop, delivered in one call."},
    {Py_tp_dealloc, batch_dealloc},
    {Py_tp_traverse, batch_traverse},
    {Py_tp_clear, batch_clear},
    {Py_tp_repr, batch_repr},
    {Py_tp_call, PyVectorcall_Call},
    {Py_tp_members, batch_members},
    {0, NULL},
};

static PyType_Spec batch_spec = {
    .name = "cfutures._cfutures._Batch",
    .basicsize = sizeof(cf_batch),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC
             | Py_TPFLAGS_HAVE_VECTORCALL | Py_TPFLAGS_IMMUTABLETYPE
             | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = batch_slots,
};

/* The batch of `loop` for this thread (borrowed from the thread's cache,
 * which keeps it alive), made on first use. */
static cf_batch *
get_batch(cf_state *st, PyObject *loop)
{
    PyObject *tdict = PyThreadState_GetDict();
    if (tdict == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "no thread state dict");
        return NULL;
    }
    PyObject *cached = PyDict_GetItemWithError(tdict, st->batch_key);
    if (cached != NULL && Py_IS_TYPE(cached, st->batch_type)
        && batch_loop((cf_batch *)cached) == loop) {
        return (cf_batch *)cached;
    }
    if (cached == NULL && PyErr_Occurred()) {
        return NULL;
    }
    cf_batch *b = PyObject_GC_New(cf_batch, st->batch_type);
    if (b == NULL) {
        return NULL;
    }
    b->vectorcall = batch_flush;
    b->thread_id = PyThread_get_thread_ident();
    b->head = b->tail = NULL;
    b->scheduled = 0;
    /* Weak: the cache must not keep a finished loop alive.  A queued
     * node's loop future holds its loop, so the loop outlives its wakeups. */
    b->loop_ref = PyWeakref_NewRef(loop, NULL);
    PyObject_GC_Track(b);
    if (b->loop_ref == NULL) {
        Py_DECREF(b);
        return NULL;
    }
    /* Replacing the previous loop's batch is safe: its queued nodes and a
     * scheduled flush hold it. */
    int rc = PyDict_SetItem(tdict, st->batch_key, (PyObject *)b);
    Py_DECREF(b);
    return rc < 0 ? NULL : b;
}

/* A new future of `loop`, marked as the Task expects of what a coroutine
 * yields (what asyncio.Future.__await__ does before `yield self`). */
static PyObject *
new_loop_future(cf_state *st, PyObject *loop)
{
    PyObject *lf = PyObject_VectorcallMethod(
        st->str_create_future, &loop, 1 | PY_VECTORCALL_ARGUMENTS_OFFSET,
        NULL);
    if (lf == NULL) {
        return NULL;
    }
    if (PyObject_SetAttr(lf, st->str_blocking, Py_True) < 0) {
        Py_DECREF(lf);
        return NULL;
    }
    return lf;
}

static int
loop_future_cancelled(cf_state *st, PyObject *lf)
{
    PyObject *r = PyObject_CallMethodNoArgs(lf, st->str_cancelled);
    if (r == NULL) {
        return -1;
    }
    int c = PyObject_IsTrue(r);
    Py_DECREF(r);
    return c;
}

static void
node_detach(cf_aionode *node)
{
    Py_CLEAR(node->loop_future);
    Py_CLEAR(node->batch);
}

static int
node_traverse(cf_aionode *node, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(node));
    Py_VISIT(node->loop_future);
    Py_VISIT(node->batch);
    return 0;
}

/* ---- helpers shared by the iterators -------------------------------- */

/* Raise StopIteration(value) so that `yield from` / Task sees `value`. */
static void
set_stop_iteration(PyObject *value)
{
    if (value == Py_None) {
        PyErr_SetNone(PyExc_StopIteration);
        return;
    }
    if (PyTuple_Check(value) || PyExceptionInstance_Check(value)) {
        /* These would be taken as the exception's args or instance. */
        PyObject *e = PyObject_CallOneArg(PyExc_StopIteration, value);
        if (e != NULL) {
            PyErr_SetObject(PyExc_StopIteration, e);
            Py_DECREF(e);
        }
        return;
    }
    PyErr_SetObject(PyExc_StopIteration, value);
}

/* A StopIteration escaping an iterator would read as its return value:
 * re-raise it as RuntimeError, as a generator does (PEP 479).  (The
 * stdlib's wrap_future cannot deliver it at all: asyncio.Future refuses
 * StopIteration and the awaiter hangs.) */
static void
fix_stop_iteration(void)
{
    if (!PyErr_ExceptionMatches(PyExc_StopIteration)
        && !PyErr_ExceptionMatches(PyExc_StopAsyncIteration)) {
        return;
    }
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL) {
        PyException_SetTraceback(value, tb);
    }
    PyErr_Format(PyExc_RuntimeError, "%s raised by the awaited call",
                 ((PyTypeObject *)type)->tp_name);
    PyObject *t2, *v2, *tb2;
    PyErr_Fetch(&t2, &v2, &tb2);
    PyErr_NormalizeException(&t2, &v2, &tb2);
    PyException_SetCause(v2, Py_NewRef(value));
    PyException_SetContext(v2, value);
    Py_DECREF(type);
    Py_XDECREF(tb);
    PyErr_Restore(t2, v2, tb2);
}

/* gen.throw(typ[, val[, tb]]): raise what was thrown (asyncio's
 * FutureIter.throw does the same). */
static PyObject *
raise_thrown(PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 3) {
        PyErr_Format(PyExc_TypeError,
                     "throw expected at least 1 argument, got %zd", nargs);
        return NULL;
    }
    PyObject *type = args[0];
    PyObject *val = nargs >= 2 ? args[1] : NULL;
    PyObject *tb = nargs == 3 ? args[2] : NULL;
    if (val == Py_None) {
        val = NULL;
    }
    if (tb == Py_None) {
        tb = NULL;
    }
    else if (tb != NULL && !PyTraceBack_Check(tb)) {
        PyErr_SetString(PyExc_TypeError,
                        "throw() third argument must be a traceback");
        return NULL;
    }
    Py_INCREF(type);
    Py_XINCREF(val);
    Py_XINCREF(tb);
    if (PyExceptionClass_Check(type)) {
        PyErr_NormalizeException(&type, &val, &tb);
    }
    else if (PyExceptionInstance_Check(type)) {
        if (val != NULL) {
            PyErr_SetString(PyExc_TypeError,
                            "instance exception may not have a separate "
                            "value");
            goto fail;
        }
        val = type;
        type = Py_NewRef(PyExceptionInstance_Class(val));
        if (tb == NULL) {
            tb = PyException_GetTraceback(val);
        }
    }
    else {
        PyErr_SetString(PyExc_TypeError,
                        "exceptions must be classes deriving BaseException "
                        "or instances of such a class");
        goto fail;
    }
    PyErr_Restore(type, val, tb);
    return NULL;
fail:
    Py_DECREF(type);
    Py_XDECREF(val);
    Py_XDECREF(tb);
    return NULL;
}

/* ---- Future.__await__: the awaiter ---------------------------------- */

enum { AW_INIT, AW_WAITING, AW_DONE };

typedef struct {
    cf_aionode node;
    cf_future *future;
    unsigned char state;
} cf_awaiter;

/* The outcome of the (done) future, as `await` delivers it. */
static PySendResult
awaiter_outcome(cf_state *st, cf_awaiter *aw, PyObject **presult)
{
    cf_future *f = aw->future;
    aw->state = AW_DONE;
    node_detach(&aw->node);
    if (f->state == CF_CANCELLED || f->state == CF_CANCELLED_AND_NOTIFIED) {
        /* As wrap_future: a cancelled future cancels the awaiter. */
        if (aio_import(st) == 0) {
            PyErr_SetNone(st->asyncio_CancelledError);
        }
        *presult = NULL;
        return PYGEN_ERROR;
    }
    PyObject *r;
    if (f->exception == NULL) {
        r = Py_NewRef(f->result != NULL ? f->result : Py_None);
    }
    else {
        r = cf_future_get_result(f);
    }
    if (r == NULL) {
        fix_stop_iteration();
        *presult = NULL;
        return PYGEN_ERROR;
    }
    *presult = r;
    return PYGEN_RETURN;
}

static PySendResult
awaiter_send_impl(cf_awaiter *aw, PyObject **presult)
{
    *presult = NULL;
    if (aw->state == AW_DONE) {
        /* Exhausted, like a finished generator. */
        *presult = Py_NewRef(Py_None);
        return PYGEN_RETURN;
    }
    cf_state *st = PyType_GetModuleState(Py_TYPE(aw));
    if (cf_future_is_done(aw->future)) {
        /* The fast path: a finished future never touches the loop. */
        return awaiter_outcome(st, aw, presult);
    }
    PyObject *loop = running_loop(st);
    if (loop == NULL) {
        return PYGEN_ERROR;
    }
    if (aw->state == AW_WAITING) {
        /* Woken but the future is still pending: only a driver other than
         * a Task can do this.  Wait again on a fresh loop future; the
         * done-callback registered before still posts this node. */
        if (aw->node.loop_future != NULL) {
            PyObject *lf = new_loop_future(st, loop);
            Py_DECREF(loop);
            if (lf == NULL) {
                return PYGEN_ERROR;
            }
            Py_SETREF(aw->node.loop_future, Py_NewRef(lf));
            *presult = lf;
            return PYGEN_NEXT;
        }
        Py_DECREF(loop);
        PyErr_SetString(PyExc_RuntimeError, "awaiter was detached");
        return PYGEN_ERROR;
    }
    cf_batch *b = get_batch(st, loop);
    if (b == NULL) {
        Py_DECREF(loop);
        return PYGEN_ERROR;
    }
    PyObject *lf = new_loop_future(st, loop);
    Py_DECREF(loop);
    if (lf == NULL) {
        return PYGEN_ERROR;
    }
    aw->node.loop_future = Py_NewRef(lf);
    aw->node.batch = (cf_batch *)Py_NewRef(b);
    aw->state = AW_WAITING;
    /* The awaiter itself is the done-callback: nothing else to allocate.
     * If the future finished meanwhile, it posts right away. */
    if (cf_future_add_done_callback(aw->future, (PyObject *)aw) < 0) {
        aw->state = AW_DONE;
        node_detach(&aw->node);
        Py_DECREF(lf);
        return PYGEN_ERROR;
    }
    *presult = lf;
    return PYGEN_NEXT;
}

static PySendResult
awaiter_am_send(PyObject *self, PyObject *arg, PyObject **presult)
{
    return awaiter_send_impl((cf_awaiter *)self, presult);
}

static PyObject *
awaiter_iternext(PyObject *self)
{
    PyObject *r;
    PySendResult s = awaiter_send_impl((cf_awaiter *)self, &r);
    if (s == PYGEN_RETURN) {
        if (r != Py_None) {
            set_stop_iteration(r);
        }
        Py_DECREF(r);
        return NULL;
    }
    return r;
}

static PyObject *
awaiter_send(PyObject *self, PyObject *value)
{
    PyObject *r;
    PySendResult s = awaiter_send_impl((cf_awaiter *)self, &r);
    if (s == PYGEN_RETURN) {
        set_stop_iteration(r);
        Py_DECREF(r);
        return NULL;
    }
    return r;
}

/* The Task throws CancelledError in when it is cancelled: as wrap_future
 * does, a cancelled loop future cancels the cfutures future. */
static PyObject *
awaiter_throw(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    cf_awaiter *aw = (cf_awaiter *)self;
    if (aw->state == AW_WAITING && aw->node.loop_future != NULL) {
        cf_state *st = PyType_GetModuleState(Py_TYPE(aw));
        int c = loop_future_cancelled(st, aw->node.loop_future);
        if (c < 0) {
            return NULL;
        }
        if (c && cf_future_cancel(aw->future) < 0) {
            return NULL;
        }
    }
    aw->state = AW_DONE;
    node_detach(&aw->node);
    return raise_thrown(args, nargs);
}

static PyObject *
awaiter_close(PyObject *self, PyObject *unused)
{
    cf_awaiter *aw = (cf_awaiter *)self;
    aw->state = AW_DONE;
    node_detach(&aw->node);
    Py_RETURN_NONE;
}

/* Called by the future when it completes: post the wakeup. */
static PyObject *
awaiter_callback(PyObject *self, PyObject *const *args, size_t nargsf,
                 PyObject *kwnames)
{
    batch_post((cf_aionode *)self);
    Py_RETURN_NONE;
}

static int
awaiter_traverse(cf_awaiter *aw, visitproc visit, void *arg)
{
    Py_VISIT(aw->future);
    return node_traverse(&aw->node, visit, arg);
}

static int
awaiter_clear(cf_awaiter *aw)
{
    node_detach(&aw->node);
    Py_CLEAR(aw->future);
    return 0;
}

static void
awaiter_dealloc(cf_awaiter *aw)
{
    PyTypeObject *tp = Py_TYPE(aw);
    PyObject_GC_UnTrack(aw);
    awaiter_clear(aw);
    tp->tp_free((PyObject *)aw);
    Py_DECREF(tp);
}

PyObject *
cf_future_await(PyObject *self)
{
    cf_state *st = cf_state_from_type(Py_TYPE(self));
    if (st == NULL) {
        return NULL;
    }
    cf_awaiter *aw = PyObject_GC_New(cf_awaiter, st->awaiter_type);
    if (aw == NULL) {
        return NULL;
    }
    aw->node.vectorcall = awaiter_callback;
    aw->node.loop_future = NULL;
    aw->node.batch = NULL;
    aw->node.next = NULL;
    aw->node.queued = 0;
    aw->future = (cf_future *)Py_NewRef(self);
    aw->state = AW_INIT;
    PyObject_GC_Track(aw);
    return (PyObject *)aw;
}

static PyMethodDef awaiter_methods[] = {
    {"send", awaiter_send, METH_O, NULL},
    {"throw", (PyCFunction)(void (*)(void))awaiter_throw, METH_FASTCALL,
     NULL},
    {"close", awaiter_close, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef awaiter_members[] = {
    {"__vectorcalloffset__", T_PYSSIZET, offsetof(cf_aionode, vectorcall),
     READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot awaiter_slots[] = {
    {Py_tp_doc, "What Future.__await__ returns."},
    {Py_tp_dealloc, awaiter_dealloc},
    {Py_tp_traverse, awaiter_traverse},
    {Py_tp_clear, awaiter_clear},
    {Py_tp_iter, PyObject_SelfIter},
    {Py_tp_iternext, awaiter_iternext},
    {Py_am_send, awaiter_am_send},
    {Py_tp_call, PyVectorcall_Call},
    {Py_tp_methods, awaiter_methods},
    {Py_tp_members, awaiter_members},
    {0, NULL},
};

static PyType_Spec awaiter_spec = {
    .name = "cfutures._cfutures._FutureAwaiter",
    .basicsize = sizeof(cf_awaiter),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC
             | Py_TPFLAGS_HAVE_VECTORCALL | Py_TPFLAGS_IMMUTABLETYPE
             | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = awaiter_slots,
};

/* ---- to_thread ------------------------------------------------------ */

enum { AC_NEW, AC_SUBMITTED, AC_DONE };

/* One to_thread() call: a coroutine-like object for the loop (send, throw,
 * close, __await__) and, for the pool, the callable that runs fn in the
 * copied context and posts the outcome straight to the loop's batch. */
typedef struct {
    cf_aionode node;
    PyObject *callargs;       /* (fn, *args, *kwvalues); NULL once run */
    PyObject *kwnames;        /* NULL or a tuple of str */
    PyObject *context;        /* contextvars.copy_context() at first step */
    PyObject *result;
    PyObject *exception;
    PyObject *pool_future;    /* what pool.submit() returned, to cancel */
    Py_ssize_t nargs;
    unsigned char state;
    unsigned char ran;        /* outcome stored (set by the worker) */
} cf_aiocall;

/* Run by a pool worker: fn(*args, **kwargs) in the copied context. */
static PyObject *
aiocall_run(PyObject *self, PyObject *const *unused_args, size_t nargsf,
            PyObject *unused_kw)
{
    cf_aiocall *c = (cf_aiocall *)self;
    if (c->callargs == NULL || c->ran) {
        Py_RETURN_NONE;
    }
    PyObject *callargs = c->callargs;
    PyObject *kwnames = c->kwnames;
    PyObject *ctx = c->context;
    c->callargs = c->kwnames = c->context = NULL;
    PyObject *r = NULL;
    if (PyContext_Enter(ctx) == 0) {
        PyObject **items = &PyTuple_GET_ITEM(callargs, 0);
        r = PyObject_Vectorcall(items[0], items + 1, c->nargs, kwnames);
        if (PyContext_Exit(ctx) < 0) {
            Py_CLEAR(r);
        }
    }
    if (r != NULL) {
        c->result = r;
    }
    else {
        /* Every exception goes to the awaiter, BaseException too, as the
         * stdlib's _WorkItem.run delivers it to the future. */
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        PyErr_NormalizeException(&type, &value, &tb);
        if (tb != NULL) {
            PyException_SetTraceback(value, tb);
        }
        Py_XDECREF(type);
        Py_XDECREF(tb);
        c->exception = value;
    }
    c->ran = 1;
    /* The arguments may be big or hold resources: drop them here, as the
     * stdlib's work item does, not when the awaiter lets go. */
    Py_DECREF(callargs);
    Py_XDECREF(kwnames);
    Py_DECREF(ctx);
    batch_post(&c->node);
    Py_RETURN_NONE;
}

/* The pool that runs to_thread calls: the loop's default executor when it
 * is a cfutures pool (set with install() or set_default_executor), else
 * the shared module-level one.  New ref. */
static PyObject *
pick_pool(cf_state *st, PyObject *loop)
{
    PyObject *ex;
    /* No AttributeError is made when missing (uvloop has no such
     * attribute unless install() set it). */
    if (_PyObject_LookupAttr(loop, st->str_default_executor, &ex) < 0) {
        return NULL;
    }
    if (ex != NULL) {
        if (st->aio_pool_type != NULL
            && PyObject_TypeCheck(ex, (PyTypeObject *)st->aio_pool_type)) {
            return ex;
        }
        Py_DECREF(ex);
    }
    if (st->default_pool != NULL) {
        return Py_NewRef(st->default_pool);
    }
    if (st->aio_pool_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError,
                        "cfutures: no pool type configured for to_thread");
        return NULL;
    }
    PyObject *kw = Py_BuildValue("{s:s}", "thread_name_prefix",
                                 "cfutures.to_thread");
    if (kw == NULL) {
        return NULL;
    }
    PyObject *empty = PyTuple_New(0);
    PyObject *pool = empty ? PyObject_Call(st->aio_pool_type, empty, kw)
                           : NULL;
    Py_XDECREF(empty);
    Py_DECREF(kw);
    if (pool == NULL) {
        return NULL;
    }
    /* Making it ran Python code: another thread may have made one too. */
    if (st->default_pool == NULL) {
        st->default_pool = Py_NewRef(pool);
    }
    else {
        Py_SETREF(pool, Py_NewRef(st->default_pool));
    }
    return pool;
}

static PySendResult
aiocall_outcome(cf_aiocall *c, PyObject **presult)
{
    c->state = AC_DONE;
    node_detach(&c->node);
    Py_CLEAR(c->pool_future);
    if (c->exception != NULL) {
        PyObject *e = c->exception;
        c->exception = NULL;
        PyErr_SetObject((PyObject *)Py_TYPE(e), e);
        Py_DECREF(e);
        fix_stop_iteration();
        *presult = NULL;
        return PYGEN_ERROR;
    }
    *presult = c->result != NULL ? c->result : Py_NewRef(Py_None);
    c->result = NULL;
    return PYGEN_RETURN;
}

static PySendResult
aiocall_send_impl(cf_aiocall *c, PyObject **presult)
{
    *presult = NULL;
    if (c->state == AC_SUBMITTED && c->ran) {
        return aiocall_outcome(c, presult);
    }
    if (c->state == AC_DONE) {
        PyErr_SetString(PyExc_RuntimeError,
                        "cannot reuse already awaited coroutine");
        return PYGEN_ERROR;
    }
    if (c->state == AC_SUBMITTED) {
        PyErr_SetString(PyExc_RuntimeError,
                        "coroutine is being awaited already");
        return PYGEN_ERROR;
    }
    cf_state *st = PyType_GetModuleState(Py_TYPE(c));
    PyObject *loop = running_loop(st);
    if (loop == NULL) {
        goto fail;
    }
    cf_batch *b = get_batch(st, loop);
    PyObject *pool = b ? pick_pool(st, loop) : NULL;
    if (pool == NULL) {
        Py_DECREF(loop);
        goto fail;
    }
    PyObject *lf = new_loop_future(st, loop);
    Py_DECREF(loop);
    if (lf == NULL) {
        Py_DECREF(pool);
        goto fail;
    }
    c->context = PyContext_CopyCurrent();
    if (c->context == NULL) {
        Py_DECREF(lf);
        Py_DECREF(pool);
        goto fail;
    }
    /* Ready before submit: a worker may finish and post before submit()
     * returns. */
    c->node.loop_future = Py_NewRef(lf);
    c->node.batch = (cf_batch *)Py_NewRef(b);
    c->state = AC_SUBMITTED;
    PyObject *args[2] = {pool, (PyObject *)c};
    PyObject *pf = PyObject_VectorcallMethod(
        st->str_submit, args, 2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    Py_DECREF(pool);
    if (pf == NULL) {
        Py_DECREF(lf);
        goto fail;
    }
    Py_XSETREF(c->pool_future, pf);
    *presult = lf;
    return PYGEN_NEXT;
fail:
    c->state = AC_DONE;
    node_detach(&c->node);
    Py_CLEAR(c->callargs);
    Py_CLEAR(c->kwnames);
    Py_CLEAR(c->context);
    return PYGEN_ERROR;
}

static PySendResult
aiocall_am_send(PyObject *self, PyObject *arg, PyObject **presult)
{
    return aiocall_send_impl((cf_aiocall *)self, presult);
}

static PyObject *
aiocall_iternext(PyObject *self)
{
    PyObject *r;
    PySendResult s = aiocall_send_impl((cf_aiocall *)self, &r);
    if (s == PYGEN_RETURN) {
        if (r != Py_None) {
            set_stop_iteration(r);
        }
        Py_DECREF(r);
        return NULL;
    }
    return r;
}

/* What a Task calls when this is its coroutine (create_task(to_thread())). */
static PyObject *
aiocall_send(PyObject *self, PyObject *value)
{
    cf_aiocall *c = (cf_aiocall *)self;
    if (c->state == AC_NEW && value != Py_None) {
        PyErr_SetString(PyExc_TypeError,
                        "can't send non-None value to a just-started "
                        "coroutine");
        return NULL;
    }
    PyObject *r;
    PySendResult s = aiocall_send_impl(c, &r);
    if (s == PYGEN_RETURN) {
        set_stop_iteration(r);
        Py_DECREF(r);
        return NULL;
    }
    return r;
}

static int
cancel_pool_future(cf_state *st, PyObject *pf)
{
    if (cf_future_check(st, pf)) {
        return cf_future_cancel((cf_future *)pf) < 0 ? -1 : 0;
    }
    PyObject *r = PyObject_CallMethod(pf, "cancel", NULL);
    Py_XDECREF(r);
    return r == NULL ? -1 : 0;
}

/* As asyncio.to_thread: cancelling the awaiting task cancels the call if
 * it has not started; one already running runs to its end, unawaited. */
static PyObject *
aiocall_throw(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    cf_aiocall *c = (cf_aiocall *)self;
    if (c->state == AC_SUBMITTED && c->node.loop_future != NULL
        && c->pool_future != NULL) {
        cf_state *st = PyType_GetModuleState(Py_TYPE(c));
        int cancelled = loop_future_cancelled(st, c->node.loop_future);
        if (cancelled < 0) {
            return NULL;
        }
        if (cancelled && cancel_pool_future(st, c->pool_future) < 0) {
            return NULL;
        }
    }
    c->state = AC_DONE;
    node_detach(&c->node);
    Py_CLEAR(c->pool_future);
    Py_CLEAR(c->result);
    Py_CLEAR(c->exception);
    return raise_thrown(args, nargs);
}

static PyObject *
aiocall_close(PyObject *self, PyObject *unused)
{
    cf_aiocall *c = (cf_aiocall *)self;
    c->state = AC_DONE;
    node_detach(&c->node);
    Py_CLEAR(c->pool_future);
    Py_CLEAR(c->result);
    Py_CLEAR(c->exception);
    Py_RETURN_NONE;
}

static PyObject *
aiocall_await(PyObject *self)
{
    return Py_NewRef(self);
}

static PyObject *
aiocall_get_name(PyObject *self, void *closure)
{
    return PyUnicode_FromString("to_thread");
}

static PyObject *
aiocall_get_running(PyObject *self, void *closure)
{
    Py_RETURN_FALSE;
}

static int
aiocall_traverse(cf_aiocall *c, visitproc visit, void *arg)
{
    Py_VISIT(c->callargs);
    Py_VISIT(c->kwnames);
    Py_VISIT(c->context);
    Py_VISIT(c->result);
    Py_VISIT(c->exception);
    Py_VISIT(c->pool_future);
    return node_traverse(&c->node, visit, arg);
}

static int
aiocall_clear(cf_aiocall *c)
{
    node_detach(&c->node);
    Py_CLEAR(c->callargs);
    Py_CLEAR(c->kwnames);
    Py_CLEAR(c->context);
    Py_CLEAR(c->result);
    Py_CLEAR(c->exception);
    Py_CLEAR(c->pool_future);
    return 0;
}

static void
aiocall_dealloc(cf_aiocall *c)
{
    PyTypeObject *tp = Py_TYPE(c);
    PyObject_GC_UnTrack(c);
    aiocall_clear(c);
    tp->tp_free((PyObject *)c);
    Py_DECREF(tp);
}

static PyMethodDef aiocall_methods[] = {
    {"send", aiocall_send, METH_O, NULL},
    {"throw", (PyCFunction)(void (*)(void))aiocall_throw, METH_FASTCALL,
     NULL},
    {"close", aiocall_close, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef aiocall_getset[] = {
    {"__name__", aiocall_get_name, NULL, NULL, NULL},
    {"__qualname__", aiocall_get_name, NULL, NULL, NULL},
    {"cr_running", aiocall_get_running, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef aiocall_members[] = {
    {"__vectorcalloffset__", T_PYSSIZET, offsetof(cf_aionode, vectorcall),
     READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot aiocall_slots[] = {
    {Py_tp_doc, "A cfutures.to_thread() call: await it, or make it a task."},
    {Py_tp_dealloc, aiocall_dealloc},
    {Py_tp_traverse, aiocall_traverse},
    {Py_tp_clear, aiocall_clear},
    {Py_tp_iter, PyObject_SelfIter},
    {Py_tp_iternext, aiocall_iternext},
    {Py_am_await, aiocall_await},
    {Py_am_send, aiocall_am_send},
    {Py_tp_call, PyVectorcall_Call},
    {Py_tp_methods, aiocall_methods},
    {Py_tp_getset, aiocall_getset},
    {Py_tp_members, aiocall_members},
    {0, NULL},
};

static PyType_Spec aiocall_spec = {
    .name = "cfutures._cfutures._ToThreadCall",
    .basicsize = sizeof(cf_aiocall),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC
             | Py_TPFLAGS_HAVE_VECTORCALL | Py_TPFLAGS_IMMUTABLETYPE
             | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = aiocall_slots,
};

/* to_thread(fn, /, *args, **kwargs) */
static PyObject *
to_thread(PyObject *module, PyObject *const *args, Py_ssize_t nargs,
          PyObject *kwnames)
{
    cf_state *st = cf_get_state(module);
    if (nargs < 1) {
        PyErr_SetString(PyExc_TypeError,
                        "to_thread() missing 1 required positional argument: "
                        "'func'");
        return NULL;
    }
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    PyObject *callargs = PyTuple_New(nargs + nkw);
    if (callargs == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < nargs + nkw; i++) {
        PyTuple_SET_ITEM(callargs, i, Py_NewRef(args[i]));
    }
    cf_aiocall *c = PyObject_GC_New(cf_aiocall, st->aiocall_type);
    if (c == NULL) {
        Py_DECREF(callargs);
        return NULL;
    }
    c->node.vectorcall = aiocall_run;
    c->node.loop_future = NULL;
    c->node.batch = NULL;
    c->node.next = NULL;
    c->node.queued = 0;
    c->callargs = callargs;
    c->kwnames = nkw ? Py_NewRef(kwnames) : NULL;
    c->context = NULL;
    c->result = NULL;
    c->exception = NULL;
    c->pool_future = NULL;
    c->nargs = nargs - 1;
    c->state = AC_NEW;
    c->ran = 0;
    PyObject_GC_Track(c);
    return (PyObject *)c;
}

/* _aio_configure(pool_type): the executor class whose instances to_thread
 * runs on when one is the loop's default executor, and of which it makes
 * its shared pool. */
static PyObject *
aio_configure(PyObject *module, PyObject *pool_type)
{
    cf_state *st = cf_get_state(module);
    if (!PyType_Check(pool_type)) {
        PyErr_SetString(PyExc_TypeError, "pool type must be a class");
        return NULL;
    }
    Py_XSETREF(st->aio_pool_type, Py_NewRef(pool_type));
    Py_RETURN_NONE;
}

/* _aio_shared_pool(create=True): the shared to_thread pool (or None). */
static PyObject *
aio_shared_pool(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    cf_state *st = cf_get_state(module);
    if (st->default_pool != NULL) {
        return Py_NewRef(st->default_pool);
    }
    if (nargs >= 1 && !PyObject_IsTrue(args[0])) {
        Py_RETURN_NONE;
    }
    /* Py_None has no _default_executor: this makes the shared pool. */
    return pick_pool(st, Py_None);
}

/* _aio_forget_shared_pool(): after fork() the pool's threads are gone in
 * the child; the next to_thread makes a new pool. */
static PyObject *
aio_forget_shared_pool(PyObject *module, PyObject *unused)
{
    cf_state *st = cf_get_state(module);
    Py_CLEAR(st->default_pool);
    Py_RETURN_NONE;
}

static PyMethodDef aio_functions[] = {
    {"to_thread", (PyCFunction)(void (*)(void))to_thread,
     METH_FASTCALL | METH_KEYWORDS,
     "to_thread(func, /, *args, **kwargs)\n--\n\n"
     "Run func(*args, **kwargs) in a cfutures thread pool; await the "
     "result.\n\nThe counterpart of asyncio.to_thread: context variables "
     "are copied, keyword arguments passed.  It runs on the loop's default "
     "executor when that is a cfutures pool (see install()), else on a "
     "shared pool.  The returned object is a coroutine: await it, or pass "
     "it to asyncio.create_task, gather or TaskGroup.create_task."},
    {"_aio_configure", aio_configure, METH_O, NULL},
    {"_aio_shared_pool", (PyCFunction)(void (*)(void))aio_shared_pool,
     METH_FASTCALL, NULL},
    {"_aio_forget_shared_pool", aio_forget_shared_pool, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

int
cf_aio_setup(PyObject *module, cf_state *st)
{
#define INTERN(field, s)                                           \
    do {                                                           \
        if ((st->field = PyUnicode_InternFromString(s)) == NULL) { \
            return -1;                                             \
        }                                                          \
    } while (0)
    INTERN(batch_key, "cfutures._cfutures.batch");
    INTERN(str_call_soon_threadsafe, "call_soon_threadsafe");
    INTERN(str_call_soon, "call_soon");
    INTERN(str_create_future, "create_future");
    INTERN(str_set_result, "set_result");
    INTERN(str_blocking, "_asyncio_future_blocking");
    INTERN(str_cancelled, "cancelled");
    INTERN(str_submit, "submit");
    INTERN(str_default_executor, "_default_executor");
#undef INTERN
#define TYPE(field, spec)                                               \
    do {                                                                \
        st->field = (PyTypeObject *)PyType_FromModuleAndSpec(           \
            module, &spec, NULL);                                       \
        if (st->field == NULL) {                                        \
            return -1;                                                  \
        }                                                               \
    } while (0)
    TYPE(batch_type, batch_spec);
    TYPE(awaiter_type, awaiter_spec);
    TYPE(aiocall_type, aiocall_spec);
#undef TYPE
    return PyModule_AddFunctions(module, aio_functions);
}
