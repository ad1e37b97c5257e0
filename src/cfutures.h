/* cfutures internal header: module state and the prototypes the
 * concept files (future.c, event.c, executor.c, wait.c, aio.c) share. */
#ifndef CFUTURES_H
#define CFUTURES_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pythread.h>

#include "compat.h"
#include "platform.h"

/* ---- module state --------------------------------------------------- */

typedef struct {
    PyTypeObject *future_type;        /* _cfutures.Future, the C base */
    PyTypeObject *public_future_type; /* cfutures.Future (set by the package) */
    PyTypeObject *executor_type;      /* _cfutures.ThreadPoolExecutor */
    PyTypeObject *public_executor_type;
    PyTypeObject *workqueue_type;
    PyTypeObject *mapiter_type;
    PyTypeObject *aswaiter_type;      /* as_completed iterator */
    PyTypeObject *awaiter_type;       /* what Future.__await__ returns */
    PyTypeObject *batch_type;         /* per-loop wakeup batch */
    PyTypeObject *aiocall_type;       /* to_thread work item */
    PyTypeObject *loopcall_type;      /* a done-callback run on a loop */
    PyTypeObject *loopfuture_type;    /* run_in_executor's result under
                                         cfutures.install() */

    /* The stdlib's own classes and constants (docs/DESIGN.md, contract 3). */
    PyObject *CancelledError;
    PyObject *TimeoutError;
    PyObject *InvalidStateError;
    PyObject *BrokenExecutor;
    PyObject *BrokenThreadPool;
    PyObject *std_future_type;        /* concurrent.futures.Future */
    PyObject *DoneAndNotDoneFutures;
    PyObject *FIRST_COMPLETED;
    PyObject *FIRST_EXCEPTION;
    PyObject *ALL_COMPLETED;
    PyObject *state_names[5];         /* _base.PENDING ... _base.FINISHED */
    PyObject *logger;                 /* logging.getLogger('concurrent.futures') */
    PyObject *threading_Condition;

    /* Guards the module-wide state another thread may change at any time:
     * default_pool, the pools registry, and the lazily found
     * chain_code/wait_code (whose readers load the pointer with acquire,
     * after which the fields written before it are stable).  Never held
     * while calling into Python.  README "Concurrency model". */
    cf_mutex lock;

    /* Slots reserved for the executor and asyncio bridge. */
    PyObject *threading_Thread;
    PyObject *asyncio_CancelledError;
    PyObject *get_running_loop;       /* asyncio.events._get_running_loop */
    PyObject *batch_key;              /* key of the per-thread batch cache */
    PyObject *default_pool;           /* shared pool of cfutures.to_thread */
    PyObject *str_call_soon_threadsafe;
    PyObject *str_call_soon;
    PyObject *str_create_future;

    /* asyncio bridge (aio.c) */
    PyObject *asyncio_InvalidStateError;
    PyObject *aio_pool_type;          /* the pool class to_thread runs on */
    PyObject *str_submit;
    PyObject *str_default_executor;
    PyObject *context_kwnames;        /* ("context",) */
    PyObject *str__ready;
    PyObject *str__executor_shutdown_called;
    PyObject *default_executor_hook;  /* cfutures._install's: a loop's
                                         default executor, made as asyncio
                                         makes it (asyncio.to_thread) */

    /* asyncio_callbacks.c: asyncio's own done-callbacks, recognised */
    PyObject *chain_code;             /* _chain_future's _call_set_state
                                         code, or None if not usable */
    int chain_shape;                  /* which known shape it has, or -1 */
    Py_ssize_t chain_cells[4];        /* its closure cells: CHAIN_CELL_*
                                         (source_loop: -1 in shapes
                                         without it) */
    PyObject *wait_code;              /* asyncio.tasks._wait's _on_completion
                                         code, or None if not usable */
    int wait_shape;                   /* which known shape it has, or -1 */

    /* executor.c: ThreadPoolExecutor */
    PyObject *executor_submit_descr;  /* our submit, to spot overrides */
    PyObject *time_sleep;
    PyObject *switch_point;           /* a no-op Python function: calling it
                                         runs the eval breaker (GIL hand-off,
                                         3.12+ GC) between C-only tasks */
    struct cf_pool *pools;            /* every live pool (fork, exit);
                                         under `lock` */
    int interp_shutdown;              /* threading atexit has run; atomic
                                         (release store, acquire load) */

    /* wait.c: the waiter cfutures.wait()/as_completed() put in a
     * concurrent.futures.Future's _waiters, and the names they use on it. */
    PyTypeObject *waiter_type;
    PyObject *str__condition;
    PyObject *str__state;
    PyObject *str__waiters;
    PyObject *str__exception;
    PyObject *str_acquire;
    PyObject *str_release;
    PyObject *str_append;
    PyObject *str_remove;
    PyObject *str_cancelled;
    PyObject *str_exception;
} cf_state;

extern PyModuleDef cf_module_def;

static inline cf_state *
cf_get_state(PyObject *module)
{
    return (cf_state *)PyModule_GetState(module);
}

/* The state of the module that defined `tp` or one of its bases; NULL with
 * an exception set when there is none. */
static inline cf_state *
cf_state_from_type(PyTypeObject *tp)
{
    PyObject *mod = PyType_GetModuleByDef(tp, &cf_module_def);
    return mod == NULL ? NULL : cf_get_state(mod);
}

/* ---- event.c: a one-shot event a thread can sleep on ---------------- */

/* The sleeper creates it (set = 0), links it somewhere a completer will
 * find it, and waits; any thread may call cf_event_set, any number of
 * times.  `is_set` is atomic: the setter that turns it 0 -> 1 (acq_rel)
 * is the one that releases `lock`; readers load it with acquire.  The
 * sleeper may free the event only once no setter can still be inside
 * cf_event_set: it unlinks itself under the guard the setters are called
 * under (a future's critical section, a waiter's spin lock), and setters
 * touch nothing after releasing `lock`'s pthread semaphore. */
typedef struct {
    PyThread_type_lock lock;
    int is_set;
} cf_event;

int cf_event_init(cf_event *ev);
void cf_event_fini(cf_event *ev);
void cf_event_set(cf_event *ev);
void cf_event_clear(cf_event *ev);
/* Wait with the GIL released until set or the timeout passes; wakes for
 * signals and runs their handlers.  timeout_ns < 0 waits forever.
 * Returns 1 set, 0 timed out, -1 with an exception (e.g. KeyboardInterrupt). */
int cf_event_wait(cf_event *ev, int64_t timeout_ns);
/* cf_event_wait's event, as a cf_poll condition. */
int cf_event_is_set(void *ev);
/* Before a blocking wait: poll ready(arg) for up to spin_ns (and no longer
 * than *timeout_ns, unless that is < 0), with the GIL released, yielding
 * the CPU; ready must be safe to call without the GIL.  1 ready; 0 not,
 * with *timeout_ns less what the poll took (0 once it is used up); -1
 * with an exception from a signal handler. */
int cf_poll(int (*ready)(void *), void *arg, int64_t *timeout_ns,
            int64_t spin_ns);

/* Parse a `timeout` argument the way threading.Condition.wait takes it:
 * None -> -1 (forever); a poll (a number <= 0; NaN up to 3.13) -> 0;
 * else nanoseconds.  Returns -1 with the running stdlib's exception for a
 * bad type, NaN (3.14+) or a too large value. */
int cf_parse_timeout(PyObject *timeout, int64_t *timeout_ns);
/* The same for a timeout already in seconds (as_completed's time left). */
int cf_parse_timeout_seconds(double secs, int64_t *timeout_ns);

/* ---- args.c: Python-style argument binding ------------------------- */

/* Bind args/kwnames (vectorcall layout) to the parameters `names`, each
 * positional-or-keyword, the first nreq required, at most nmax: out[i]
 * borrowed, NULL where not given.  The interpreter's own TypeErrors;
 * `fname` as Python names the function ("wait", "Future.set_result"),
 * `is_method` to count self in the messages as Python does. */
int cf_bind_args(const char *fname, const char *const *names,
                 Py_ssize_t nreq, Py_ssize_t nmax, int is_method,
                 PyObject *const *args, Py_ssize_t nargs,
                 PyObject *kwnames, PyObject **out);

/* ---- future.c ------------------------------------------------------- */

enum cf_future_state {
    CF_PENDING = 0,
    CF_RUNNING = 1,
    CF_CANCELLED = 2,
    CF_CANCELLED_AND_NOTIFIED = 3,
    CF_FINISHED = 4,
};

/* What happened to a future, as told to its wait nodes. */
enum cf_event_kind {
    CF_EV_CANCELLED,          /* cancel(): wakes result() but, as in the
                                 stdlib, not wait()/as_completed() */
    CF_EV_CANCEL_NOTIFIED,    /* set_running_or_notify_cancel() on a
                                 cancelled future */
    CF_EV_FINISHED,           /* set_result() / set_exception() */
};

typedef struct cf_waitnode cf_waitnode;
/* Called with the GIL held (free-threaded: inside f's critical section),
 * in the middle of the state change: it must not call into Python code
 * nor block (which would suspend the critical section): atomics, a
 * cf_spinlock and cf_event_set only. */
typedef void (*cf_notify_fn)(cf_waitnode *node, PyObject *future, int kind);

/* A blocked waiter's link into one future; owned by the waiter (usually on
 * its stack), linked and unlinked with the GIL held. */
struct cf_waitnode {
    cf_waitnode *prev;
    cf_waitnode *next;
    PyObject *future;          /* borrowed; NULL once unlinked */
    cf_notify_fn notify;
    void *owner;
};

typedef struct {
    PyObject_HEAD
    PyObject *result;
    PyObject *exception;       /* NULL when none was set */
    PyObject *callbacks;       /* NULL, one callable, or a list (cb_is_list) */
    PyObject *compat;          /* NULL, or (threading.Condition, waiters list)
                                  once stdlib code touched _condition/_waiters */
    PyObject *weakreflist;
    cf_waitnode *waiters;      /* blocked C waiters */
    unsigned char state;
    unsigned char cb_is_list;
    unsigned char by_hand;     /* _state, _result or _exception was written:
                                  readers take _condition, as the stdlib's */
} cf_future;

int cf_future_setup(PyObject *module, cf_state *st);

static inline int
cf_future_check(cf_state *st, PyObject *op)
{
    return PyObject_TypeCheck(op, st->future_type);
}

/* f->state is written under f's critical section with a release store
 * (cf_future_store_state) and may be read anywhere with an acquire load:
 * a reader that sees a final state also sees the result, exception and
 * detached waiters written before it. */
static inline int
cf_future_state(cf_future *f)
{
    return cf_load_acquire(&f->state);
}

static inline void
cf_future_store_state(cf_future *f, int state)
{
    cf_store_release(&f->state, (unsigned char)state);
}

static inline int
cf_future_is_done(cf_future *f)
{
    return cf_future_state(f) >= CF_CANCELLED;
}

/* The outcome of a done future as new references (*result and *exc, each
 * possibly NULL), read under its critical section: the fields may be
 * replaced by another thread (the writable _result/_exception), so they
 * are never borrowed.  Returns the state. */
static inline int
cf_future_outcome(cf_future *f, PyObject **result, PyObject **exc)
{
    int state;
    CF_BEGIN_CRITICAL(f)
    state = f->state;
    *result = Py_XNewRef(f->result);
    *exc = Py_XNewRef(f->exception);
    CF_END_CRITICAL()
    return state;
}

/* A new pending future of the public class (cfutures.Future). */
PyObject *cf_future_new(cf_state *st);
/* The C paths behind the methods; same semantics and errors. */
int cf_future_set_running_or_notify_cancel(cf_future *f);   /* 1, 0, -1 */
int cf_future_set_result(cf_future *f, PyObject *result);   /* 0, -1 */
int cf_future_set_exception(cf_future *f, PyObject *exc);   /* 0, -1 */
int cf_future_cancel(cf_future *f);                          /* 1, 0, -1 */
int cf_future_add_done_callback(cf_future *f, PyObject *fn); /* 0, -1 */
/* result()/exception() of a done future: new ref, or NULL with the stored
 * exception / CancelledError raised. */
PyObject *cf_future_get_result(cf_future *f);

/* Link/unlink a wait node (GIL held; without the GIL, inside f's critical
 * section: notify functions run inside it, so linking there after a state
 * check cannot miss a completion, and unlinking there, even a node the
 * completion already detached, orders after any notify of it).  Linking a
 * done future is allowed: it is never notified, so check the state in the
 * same critical section. */
void cf_future_link(cf_future *f, cf_waitnode *node, cf_notify_fn notify,
                    void *owner);
void cf_future_unlink(cf_waitnode *node);

/* ---- executor.c, wait.c, aio.c -------------------------------------- */

/* Future.__await__ (aio.c). */
PyObject *cf_future_await(PyObject *self);

int cf_executor_setup(PyObject *module, cf_state *st);
/* ThreadPoolExecutor.submit(fn, *args, **kwargs) from C: args[0..nargs)
 * positional, then the values of kwnames (vectorcall layout). */
PyObject *cf_executor_submit(PyObject *executor, PyObject *fn,
                             PyObject *const *args, Py_ssize_t nargs,
                             PyObject *kwnames);
void cf_worker_returning(void);   /* executor.c: see there */
int cf_wait_setup(PyObject *module, cf_state *st);
int cf_aio_setup(PyObject *module, cf_state *st);
/* aio.c: a done-callback (for cf_future_add_done_callback) that runs
 * fn(*args) on `loop`, which runs in this thread, through the loop's
 * batch of wakeups, in place of the callback `origin`.  Completed on the
 * loop's own thread while it runs, it runs there and then when
 * `inline_on_loop`, else on the loop's next turn (call_soon).  New ref. */
PyObject *cf_aio_loop_call(cf_state *st, PyObject *loop, PyObject *fn,
                           PyObject *args, PyObject *origin,
                           int inline_on_loop);
/* aio.c: this thread's running loop (new ref), or NULL, with an exception
 * only if finding out failed. */
PyObject *cf_aio_running_loop(cf_state *st);

/* asyncio_callbacks.c: _asyncio_callback_shapes(), for the tests: which
 * known shape each of asyncio's callbacks has on this interpreter. */
PyObject *cf_asyncio_callback_shapes(PyObject *module, PyObject *unused);

/* asyncio_callbacks.c: if fn, being added to the pending future f, is one
 * of asyncio's own callbacks that only hand f's outcome to a loop, set
 * *replacement to a done-callback doing the same through the loop's batch
 * (new ref) and return 1; 0 if not; -1 on error. */
int cf_adopt_asyncio_callback(cf_future *f, PyObject *fn,
                              PyObject **replacement);

/* aio.c: the callable a registered done-callback stands for, for
 * remove_done_callback: the callback a loop call replaced, else entry
 * itself (borrowed). */
PyObject *cf_aio_callback_target(cf_state *st, PyObject *entry);

#endif /* CFUTURES_H */
