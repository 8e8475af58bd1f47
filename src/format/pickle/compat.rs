//! Python 2 names in pickles, as Python 3 loads them: CPython's `_compat_pickle` maps
//! (`__builtin__.set` is `builtins.set`, `commands.call` is `subprocess.call`). ckptio applies
//! them before it decides anything about a global, so a renamed global is judged by what it
//! loads. The tables are checked against `fixtures/pickle/compat_pickle.json`, which
//! `make_compat_pickle.py` writes from CPython.

use super::Global;

/// Python 2 modules and the Python 3 modules loaded instead (`_compat_pickle.IMPORT_MAPPING`).
const MODULES: &[(&str, &str)] = &[
    ("BaseHTTPServer", "http.server"),
    ("CGIHTTPServer", "http.server"),
    ("ConfigParser", "configparser"),
    ("Cookie", "http.cookies"),
    ("Dialog", "tkinter.dialog"),
    ("DocXMLRPCServer", "xmlrpc.server"),
    ("FileDialog", "tkinter.filedialog"),
    ("HTMLParser", "html.parser"),
    ("Queue", "queue"),
    ("ScrolledText", "tkinter.scrolledtext"),
    ("SimpleDialog", "tkinter.simpledialog"),
    ("SimpleHTTPServer", "http.server"),
    ("SimpleXMLRPCServer", "xmlrpc.server"),
    ("SocketServer", "socketserver"),
    ("StringIO", "io"),
    ("Tix", "tkinter.tix"),
    ("Tkconstants", "tkinter.constants"),
    ("Tkdnd", "tkinter.dnd"),
    ("Tkinter", "tkinter"),
    ("UserDict", "collections"),
    ("UserList", "collections"),
    ("UserString", "collections"),
    ("__builtin__", "builtins"),
    ("_abcoll", "collections.abc"),
    ("_elementtree", "xml.etree.ElementTree"),
    ("_winreg", "winreg"),
    ("anydbm", "dbm"),
    ("cPickle", "pickle"),
    ("cStringIO", "io"),
    ("commands", "subprocess"),
    ("cookielib", "http.cookiejar"),
    ("copy_reg", "copyreg"),
    ("dbhash", "dbm.bsd"),
    ("dbm", "dbm.ndbm"),
    ("dumbdbm", "dbm.dumb"),
    ("dummy_thread", "_dummy_thread"),
    ("gdbm", "dbm.gnu"),
    ("htmlentitydefs", "html.entities"),
    ("httplib", "http.client"),
    ("markupbase", "_markupbase"),
    ("repr", "reprlib"),
    ("robotparser", "urllib.robotparser"),
    ("test.test_support", "test.support"),
    ("thread", "_thread"),
    ("tkColorChooser", "tkinter.colorchooser"),
    ("tkCommonDialog", "tkinter.commondialog"),
    ("tkFileDialog", "tkinter.filedialog"),
    ("tkFont", "tkinter.font"),
    ("tkMessageBox", "tkinter.messagebox"),
    ("tkSimpleDialog", "tkinter.simpledialog"),
    ("ttk", "tkinter.ttk"),
    ("urllib2", "urllib.request"),
    ("urlparse", "urllib.parse"),
    ("whichdb", "dbm"),
    ("xmlrpclib", "xmlrpc.client"),
];
/// Python 2 globals and the Python 3 globals loaded instead (`_compat_pickle.NAME_MAPPING`).
const NAMES: &[(&str, &str, &str, &str)] = &[
    ("UserDict", "IterableUserDict", "collections", "UserDict"),
    ("UserDict", "UserDict", "collections", "UserDict"),
    ("UserList", "UserList", "collections", "UserList"),
    ("UserString", "UserString", "collections", "UserString"),
    ("__builtin__", "basestring", "builtins", "str"),
    ("__builtin__", "intern", "sys", "intern"),
    ("__builtin__", "long", "builtins", "int"),
    ("__builtin__", "reduce", "functools", "reduce"),
    ("__builtin__", "unichr", "builtins", "chr"),
    ("__builtin__", "unicode", "builtins", "str"),
    ("__builtin__", "xrange", "builtins", "range"),
    (
        "_multiprocessing",
        "Connection",
        "multiprocessing.connection",
        "Connection",
    ),
    ("_socket", "fromfd", "socket", "fromfd"),
    (
        "exceptions",
        "ArithmeticError",
        "builtins",
        "ArithmeticError",
    ),
    ("exceptions", "AssertionError", "builtins", "AssertionError"),
    ("exceptions", "AttributeError", "builtins", "AttributeError"),
    ("exceptions", "BaseException", "builtins", "BaseException"),
    ("exceptions", "BufferError", "builtins", "BufferError"),
    ("exceptions", "BytesWarning", "builtins", "BytesWarning"),
    (
        "exceptions",
        "DeprecationWarning",
        "builtins",
        "DeprecationWarning",
    ),
    ("exceptions", "EOFError", "builtins", "EOFError"),
    (
        "exceptions",
        "EnvironmentError",
        "builtins",
        "EnvironmentError",
    ),
    ("exceptions", "Exception", "builtins", "Exception"),
    (
        "exceptions",
        "FloatingPointError",
        "builtins",
        "FloatingPointError",
    ),
    ("exceptions", "FutureWarning", "builtins", "FutureWarning"),
    ("exceptions", "GeneratorExit", "builtins", "GeneratorExit"),
    ("exceptions", "IOError", "builtins", "IOError"),
    ("exceptions", "ImportError", "builtins", "ImportError"),
    ("exceptions", "ImportWarning", "builtins", "ImportWarning"),
    (
        "exceptions",
        "IndentationError",
        "builtins",
        "IndentationError",
    ),
    ("exceptions", "IndexError", "builtins", "IndexError"),
    ("exceptions", "KeyError", "builtins", "KeyError"),
    (
        "exceptions",
        "KeyboardInterrupt",
        "builtins",
        "KeyboardInterrupt",
    ),
    ("exceptions", "LookupError", "builtins", "LookupError"),
    ("exceptions", "MemoryError", "builtins", "MemoryError"),
    ("exceptions", "NameError", "builtins", "NameError"),
    (
        "exceptions",
        "NotImplementedError",
        "builtins",
        "NotImplementedError",
    ),
    ("exceptions", "OSError", "builtins", "OSError"),
    ("exceptions", "OverflowError", "builtins", "OverflowError"),
    (
        "exceptions",
        "PendingDeprecationWarning",
        "builtins",
        "PendingDeprecationWarning",
    ),
    ("exceptions", "ReferenceError", "builtins", "ReferenceError"),
    ("exceptions", "RuntimeError", "builtins", "RuntimeError"),
    ("exceptions", "RuntimeWarning", "builtins", "RuntimeWarning"),
    ("exceptions", "StandardError", "builtins", "Exception"),
    ("exceptions", "StopIteration", "builtins", "StopIteration"),
    ("exceptions", "SyntaxError", "builtins", "SyntaxError"),
    ("exceptions", "SyntaxWarning", "builtins", "SyntaxWarning"),
    ("exceptions", "SystemError", "builtins", "SystemError"),
    ("exceptions", "SystemExit", "builtins", "SystemExit"),
    ("exceptions", "TabError", "builtins", "TabError"),
    ("exceptions", "TypeError", "builtins", "TypeError"),
    (
        "exceptions",
        "UnboundLocalError",
        "builtins",
        "UnboundLocalError",
    ),
    (
        "exceptions",
        "UnicodeDecodeError",
        "builtins",
        "UnicodeDecodeError",
    ),
    (
        "exceptions",
        "UnicodeEncodeError",
        "builtins",
        "UnicodeEncodeError",
    ),
    ("exceptions", "UnicodeError", "builtins", "UnicodeError"),
    (
        "exceptions",
        "UnicodeTranslateError",
        "builtins",
        "UnicodeTranslateError",
    ),
    ("exceptions", "UnicodeWarning", "builtins", "UnicodeWarning"),
    ("exceptions", "UserWarning", "builtins", "UserWarning"),
    ("exceptions", "ValueError", "builtins", "ValueError"),
    ("exceptions", "Warning", "builtins", "Warning"),
    (
        "exceptions",
        "ZeroDivisionError",
        "builtins",
        "ZeroDivisionError",
    ),
    ("itertools", "ifilter", "builtins", "filter"),
    ("itertools", "ifilterfalse", "itertools", "filterfalse"),
    ("itertools", "imap", "builtins", "map"),
    ("itertools", "izip", "builtins", "zip"),
    ("itertools", "izip_longest", "itertools", "zip_longest"),
    (
        "multiprocessing",
        "AuthenticationError",
        "multiprocessing.context",
        "AuthenticationError",
    ),
    (
        "multiprocessing",
        "BufferTooShort",
        "multiprocessing.context",
        "BufferTooShort",
    ),
    (
        "multiprocessing",
        "ProcessError",
        "multiprocessing.context",
        "ProcessError",
    ),
    (
        "multiprocessing",
        "TimeoutError",
        "multiprocessing.context",
        "TimeoutError",
    ),
    (
        "multiprocessing.forking",
        "Popen",
        "multiprocessing.popen_fork",
        "Popen",
    ),
    (
        "multiprocessing.process",
        "Process",
        "multiprocessing.context",
        "Process",
    ),
    ("socket", "_socketobject", "socket", "SocketType"),
    (
        "urllib",
        "ContentTooShortError",
        "urllib.error",
        "ContentTooShortError",
    ),
    ("urllib", "getproxies", "urllib.request", "getproxies"),
    ("urllib", "pathname2url", "urllib.request", "pathname2url"),
    ("urllib", "quote", "urllib.parse", "quote"),
    ("urllib", "quote_plus", "urllib.parse", "quote_plus"),
    ("urllib", "unquote", "urllib.parse", "unquote"),
    ("urllib", "unquote_plus", "urllib.parse", "unquote_plus"),
    ("urllib", "url2pathname", "urllib.request", "url2pathname"),
    ("urllib", "urlcleanup", "urllib.request", "urlcleanup"),
    ("urllib", "urlencode", "urllib.parse", "urlencode"),
    ("urllib", "urlopen", "urllib.request", "urlopen"),
    ("urllib", "urlretrieve", "urllib.request", "urlretrieve"),
    ("urllib2", "HTTPError", "urllib.error", "HTTPError"),
    ("urllib2", "URLError", "urllib.error", "URLError"),
    ("whichdb", "whichdb", "dbm", "whichdb"),
];

/// `global` as Python 3 loads it: a renamed global first, then a renamed module.
pub(crate) fn modern(global: &Global) -> Option<Global> {
    if let Some(&(_, _, module, name)) = NAMES
        .iter()
        .find(|(m, n, _, _)| *m == global.module && *n == global.name)
    {
        return Some(Global {
            module: module.to_owned(),
            name: name.to_owned(),
        });
    }
    MODULES
        .iter()
        .find(|(old, _)| *old == global.module)
        .map(|&(_, module)| Global {
            module: module.to_owned(),
            name: global.name.clone(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpython() -> serde_json::Value {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/pickle/compat_pickle.json"
        );
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }

    #[test]
    fn the_tables_are_cpythons_own() {
        let doc = cpython();
        let modules: Vec<(String, String)> = doc["import_mapping"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
            .collect();
        let ours: Vec<(String, String)> = MODULES
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect();
        assert_eq!(ours, modules);
        let names: Vec<Vec<String>> = doc["name_mapping"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| {
                row.as_array()
                    .unwrap()
                    .iter()
                    .map(|s| s.as_str().unwrap().to_owned())
                    .collect()
            })
            .collect();
        let ours: Vec<Vec<String>> = NAMES
            .iter()
            .map(|(a, b, c, d)| vec![(*a).into(), (*b).into(), (*c).into(), (*d).into()])
            .collect();
        assert_eq!(ours, names);
    }

    #[test]
    fn python_2_names_load_as_python_3_does() {
        let g = |m: &str, n: &str| Global {
            module: m.into(),
            name: n.into(),
        };
        assert_eq!(
            modern(&g("commands", "call")),
            Some(g("subprocess", "call"))
        );
        assert_eq!(modern(&g("__builtin__", "set")), Some(g("builtins", "set")));
        assert_eq!(
            modern(&g("__builtin__", "xrange")),
            Some(g("builtins", "range"))
        );
        assert_eq!(
            modern(&g("__builtin__", "reduce")),
            Some(g("functools", "reduce"))
        );
        assert_eq!(modern(&g("torch._utils", "_rebuild_tensor_v2")), None);
    }
}
