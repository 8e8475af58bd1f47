//! The globals a pickle may never name, whatever the mode, by what they would let it do were
//! they called: run code, start processes, import modules, reach files or the network, or hand
//! out any object by name. ckptio never calls anything; refusing them makes a hostile file an
//! error that says so instead of a quiet opaque node. The allow-list (what conversion turns into
//! data) stays the only way data objects are built.
//!
//! Globals are judged as Python 3 loads them (see [`compat`](super::compat)): `commands.call`
//! is `subprocess.call`.

use std::fmt;

use super::Global;

/// What a refused global would let a pickle do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Power {
    /// Run Python code (`eval`, `exec`, code objects, nested unpicklers, debuggers).
    RunCode,
    /// Start processes (`os.system`, `subprocess`).
    StartProcesses,
    /// Import modules or load native code.
    ImportModules,
    /// Read or write files.
    TouchFiles,
    /// Open network connections.
    UseTheNetwork,
    /// Reach any object by name (`getattr`, `sys.modules`, `operator.attrgetter`).
    ReachAnything,
}

impl fmt::Display for Power {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::RunCode => "run code",
            Self::StartProcesses => "start processes",
            Self::ImportModules => "import modules",
            Self::TouchFiles => "read or write files",
            Self::UseTheNetwork => "use the network",
            Self::ReachAnything => "reach any object by name",
        })
    }
}

/// Modules whose every global is refused (and their submodules: `os` covers `os.path`).
const MODULES: &[(&str, Power)] = &[
    ("os", Power::StartProcesses),
    ("posix", Power::StartProcesses),
    ("nt", Power::StartProcesses),
    ("posixpath", Power::ReachAnything),
    ("ntpath", Power::ReachAnything),
    ("genericpath", Power::ReachAnything),
    ("subprocess", Power::StartProcesses),
    ("_posixsubprocess", Power::StartProcesses),
    ("_winapi", Power::StartProcesses),
    ("pty", Power::StartProcesses),
    ("multiprocessing", Power::StartProcesses),
    ("_multiprocessing", Power::StartProcesses),
    ("concurrent", Power::StartProcesses),
    ("asyncio", Power::StartProcesses),
    ("signal", Power::StartProcesses),
    ("webbrowser", Power::StartProcesses),
    ("pydoc", Power::StartProcesses),
    ("sys", Power::ReachAnything),
    ("gc", Power::ReachAnything),
    ("operator", Power::ReachAnything),
    ("runpy", Power::RunCode),
    ("code", Power::RunCode),
    ("codeop", Power::RunCode),
    ("types", Power::RunCode),
    ("marshal", Power::RunCode),
    ("pickle", Power::RunCode),
    ("_pickle", Power::RunCode),
    ("pickletools", Power::RunCode),
    ("shelve", Power::RunCode),
    ("dill", Power::RunCode),
    ("cloudpickle", Power::RunCode),
    ("joblib", Power::RunCode),
    ("timeit", Power::RunCode),
    ("pdb", Power::RunCode),
    ("bdb", Power::RunCode),
    ("cProfile", Power::RunCode),
    ("profile", Power::RunCode),
    ("trace", Power::RunCode),
    ("doctest", Power::RunCode),
    ("unittest", Power::RunCode),
    ("idlelib", Power::RunCode),
    ("ctypes", Power::RunCode),
    ("_ctypes", Power::RunCode),
    ("cffi", Power::RunCode),
    ("importlib", Power::ImportModules),
    ("imp", Power::ImportModules),
    ("pkgutil", Power::ImportModules),
    ("zipimport", Power::ImportModules),
    ("pip", Power::ImportModules),
    ("setuptools", Power::ImportModules),
    ("distutils", Power::ImportModules),
    ("ensurepip", Power::ImportModules),
    ("venv", Power::ImportModules),
    ("site", Power::ImportModules),
    ("shutil", Power::TouchFiles),
    ("io", Power::TouchFiles),
    ("_io", Power::TouchFiles),
    ("fileinput", Power::TouchFiles),
    ("tempfile", Power::TouchFiles),
    ("zipfile", Power::TouchFiles),
    ("tarfile", Power::TouchFiles),
    ("sqlite3", Power::TouchFiles),
    ("dbm", Power::TouchFiles),
    ("socket", Power::UseTheNetwork),
    ("_socket", Power::UseTheNetwork),
    ("socketserver", Power::UseTheNetwork),
    ("ssl", Power::UseTheNetwork),
    ("http", Power::UseTheNetwork),
    ("urllib", Power::UseTheNetwork),
    ("ftplib", Power::UseTheNetwork),
    ("smtplib", Power::UseTheNetwork),
    ("xmlrpc", Power::UseTheNetwork),
    ("requests", Power::UseTheNetwork),
    // Torch and numpy modules that compile, run or load code.
    ("torch.fx", Power::RunCode),
    ("torch.jit", Power::RunCode),
    ("torch._C", Power::RunCode),
    ("torch.package", Power::RunCode),
    ("torch._dynamo", Power::RunCode),
    ("torch._inductor", Power::RunCode),
    ("torch.compiler", Power::RunCode),
    ("torch.ops", Power::ImportModules),
    ("torch.classes", Power::ImportModules),
    ("torch.hub", Power::UseTheNetwork),
    ("torch.utils.cpp_extension", Power::RunCode),
    ("torch.utils.data", Power::StartProcesses),
    ("torch.multiprocessing", Power::StartProcesses),
    ("torch.distributed.rpc", Power::UseTheNetwork),
    ("numpy.testing", Power::RunCode),
    ("numpy.f2py", Power::RunCode),
    ("numpy.distutils", Power::ImportModules),
    ("numpy.ctypeslib", Power::RunCode),
];

/// Globals refused by name in every module: what hands out a module or a code runner, or
/// loads another pickle (`posixpath.os` is the `os` module; `torch.load` unpickles).
const NAMES: &[(&str, Power)] = &[
    ("os", Power::StartProcesses),
    ("sys", Power::ReachAnything),
    ("subprocess", Power::StartProcesses),
    ("system", Power::StartProcesses),
    ("popen", Power::StartProcesses),
    ("eval", Power::RunCode),
    ("exec", Power::RunCode),
    ("execfile", Power::RunCode),
    ("compile", Power::RunCode),
    ("__import__", Power::ImportModules),
    ("import_module", Power::ImportModules),
    ("load_library", Power::ImportModules),
    ("getattr", Power::ReachAnything),
    ("setattr", Power::ReachAnything),
    ("delattr", Power::ReachAnything),
    ("globals", Power::ReachAnything),
    ("locals", Power::ReachAnything),
    ("vars", Power::ReachAnything),
    ("breakpoint", Power::RunCode),
    ("open", Power::TouchFiles),
    ("load", Power::RunCode),
    ("loads", Power::RunCode),
];

/// Builtins refused besides [`NAMES`]: they read the terminal or end the process.
const BUILTINS: &[(&str, Power)] = &[
    ("input", Power::RunCode),
    ("help", Power::RunCode),
    ("exit", Power::RunCode),
    ("quit", Power::RunCode),
];

/// Why `global` is refused, if it is.
pub(crate) fn refusal(global: &Global) -> Option<Power> {
    if let Some(&(_, power)) = NAMES.iter().find(|(n, _)| *n == global.name) {
        return Some(power);
    }
    if global.module == "builtins" {
        return BUILTINS
            .iter()
            .find(|(n, _)| *n == global.name)
            .map(|&(_, power)| power);
    }
    MODULES
        .iter()
        .find(|(m, _)| {
            global
                .module
                .strip_prefix(m)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
        })
        .map(|&(_, power)| power)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(module: &str, name: &str) -> Option<Power> {
        refusal(&Global {
            module: module.into(),
            name: name.into(),
        })
    }

    #[test]
    fn code_runners_are_refused_by_what_they_do() {
        for (module, name, power) in [
            ("os", "system", Power::StartProcesses),
            ("nt", "system", Power::StartProcesses),
            ("subprocess", "Popen", Power::StartProcesses),
            ("_posixsubprocess", "fork_exec", Power::StartProcesses),
            ("sys", "modules", Power::ReachAnything),
            ("runpy", "_run_code", Power::RunCode),
            ("builtins", "eval", Power::RunCode),
            ("builtins", "getattr", Power::ReachAnything),
            ("builtins", "__import__", Power::ImportModules),
            ("builtins", "input", Power::RunCode),
            ("os.path", "join", Power::StartProcesses),
            ("posixpath", "os", Power::StartProcesses),
            ("genericpath", "os", Power::StartProcesses),
            ("timeit", "timeit", Power::RunCode),
            ("pdb", "run", Power::RunCode),
            ("cProfile", "run", Power::RunCode),
            ("io", "open", Power::TouchFiles),
            ("pip", "main", Power::ImportModules),
            (
                "torch.fx.graph_module",
                "reduce_graph_module",
                Power::RunCode,
            ),
            ("torch.jit._script", "RecursiveScriptModule", Power::RunCode),
            ("numpy.testing._private.utils", "runstring", Power::RunCode),
            ("torch.serialization", "load", Power::RunCode),
            ("operator", "methodcaller", Power::ReachAnything),
        ] {
            assert_eq!(refused(module, name), Some(power), "{module}.{name}");
        }
    }

    #[test]
    fn data_classes_are_not_refused() {
        for (module, name) in [
            ("builtins", "set"),
            ("builtins", "bytearray"),
            ("collections", "OrderedDict"),
            ("torch._utils", "_rebuild_tensor_v2"),
            ("torch", "FloatStorage"),
            ("numpy.core.multiarray", "_reconstruct"),
            ("ossify", "Thing"),
            ("mypackage.osmosis", "Model"),
        ] {
            assert_eq!(refused(module, name), None, "{module}.{name}");
        }
    }
}
