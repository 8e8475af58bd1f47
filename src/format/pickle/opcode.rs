//! Pickle opcodes by name: one table, checked against CPython's `pickletools` list
//! (`fixtures/pickle/opcodes.json`, written by `make_opcodes.py` beside it).

/// Defines [`Opcode`] with its byte and `pickletools` name, from one table.
macro_rules! opcodes {
    ($($variant:ident = $byte:literal, $name:literal;)*) => {
        /// A pickle opcode, named as `pickletools` names it.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub(crate) enum Opcode {
            $(
                #[doc = $name]
                $variant = $byte,
            )*
        }

        impl Opcode {
            /// Every opcode, in table order.
            #[cfg(test)]
            pub(crate) const ALL: &'static [Opcode] = &[$(Opcode::$variant),*];

            /// The name `pickletools` gives it (`SHORT_BINUNICODE`).
            pub(crate) fn name(self) -> &'static str {
                match self {
                    $(Self::$variant => $name,)*
                }
            }
        }

        impl TryFrom<u8> for Opcode {
            type Error = u8;

            fn try_from(byte: u8) -> Result<Self, u8> {
                match byte {
                    $($byte => Ok(Self::$variant),)*
                    other => Err(other),
                }
            }
        }
    };
}

opcodes! {
    // Control.
    Proto = 0x80, "PROTO";
    Frame = 0x95, "FRAME";
    Stop = 0x2e, "STOP";
    Mark = 0x28, "MARK";
    Pop = 0x30, "POP";
    PopMark = 0x31, "POP_MARK";
    Dup = 0x32, "DUP";
    // Constants and numbers.
    None = 0x4e, "NONE";
    NewTrue = 0x88, "NEWTRUE";
    NewFalse = 0x89, "NEWFALSE";
    Int = 0x49, "INT";
    BinInt = 0x4a, "BININT";
    BinInt1 = 0x4b, "BININT1";
    BinInt2 = 0x4d, "BININT2";
    Long = 0x4c, "LONG";
    Long1 = 0x8a, "LONG1";
    Long4 = 0x8b, "LONG4";
    Float = 0x46, "FLOAT";
    BinFloat = 0x47, "BINFLOAT";
    // Strings and bytes.
    String = 0x53, "STRING";
    BinString = 0x54, "BINSTRING";
    ShortBinString = 0x55, "SHORT_BINSTRING";
    BinBytes = 0x42, "BINBYTES";
    ShortBinBytes = 0x43, "SHORT_BINBYTES";
    BinBytes8 = 0x8e, "BINBYTES8";
    ByteArray8 = 0x96, "BYTEARRAY8";
    Unicode = 0x56, "UNICODE";
    ShortBinUnicode = 0x8c, "SHORT_BINUNICODE";
    BinUnicode = 0x58, "BINUNICODE";
    BinUnicode8 = 0x8d, "BINUNICODE8";
    // Containers.
    EmptyList = 0x5d, "EMPTY_LIST";
    Append = 0x61, "APPEND";
    Appends = 0x65, "APPENDS";
    List = 0x6c, "LIST";
    EmptyTuple = 0x29, "EMPTY_TUPLE";
    Tuple = 0x74, "TUPLE";
    Tuple1 = 0x85, "TUPLE1";
    Tuple2 = 0x86, "TUPLE2";
    Tuple3 = 0x87, "TUPLE3";
    EmptyDict = 0x7d, "EMPTY_DICT";
    Dict = 0x64, "DICT";
    SetItem = 0x73, "SETITEM";
    SetItems = 0x75, "SETITEMS";
    EmptySet = 0x8f, "EMPTY_SET";
    AddItems = 0x90, "ADDITEMS";
    FrozenSet = 0x91, "FROZENSET";
    // The memo.
    Get = 0x67, "GET";
    BinGet = 0x68, "BINGET";
    LongBinGet = 0x6a, "LONG_BINGET";
    Put = 0x70, "PUT";
    BinPut = 0x71, "BINPUT";
    LongBinPut = 0x72, "LONG_BINPUT";
    Memoize = 0x94, "MEMOIZE";
    // Globals, calls and objects.
    Global = 0x63, "GLOBAL";
    StackGlobal = 0x93, "STACK_GLOBAL";
    Reduce = 0x52, "REDUCE";
    Build = 0x62, "BUILD";
    NewObj = 0x81, "NEWOBJ";
    NewObjEx = 0x92, "NEWOBJ_EX";
    PersId = 0x50, "PERSID";
    BinPersId = 0x51, "BINPERSID";
    Inst = 0x69, "INST";
    Obj = 0x6f, "OBJ";
    Ext1 = 0x82, "EXT1";
    Ext2 = 0x83, "EXT2";
    Ext4 = 0x84, "EXT4";
    // Out-of-band buffers.
    NextBuffer = 0x97, "NEXT_BUFFER";
    ReadonlyBuffer = 0x98, "READONLY_BUFFER";
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// `pickletools.opcodes`, as `make_opcodes.py` wrote it: name → byte.
    fn pickletools() -> BTreeMap<String, u8> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/pickle/opcodes.json");
        let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        doc["opcodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|op| {
                let code = u8::try_from(op["code"].as_u64().unwrap()).unwrap();
                (op["name"].as_str().unwrap().to_owned(), code)
            })
            .collect()
    }

    #[test]
    fn the_table_is_pickletools_own() {
        let theirs = pickletools();
        let ours: BTreeMap<String, u8> = Opcode::ALL
            .iter()
            .map(|&op| (op.name().to_owned(), op as u8))
            .collect();
        assert_eq!(ours, theirs, "names and bytes differ from pickletools");
        assert_eq!(Opcode::ALL.len(), theirs.len(), "an opcode listed twice");
    }

    #[test]
    fn every_byte_round_trips_or_is_unknown() {
        let theirs = pickletools();
        let known: BTreeMap<u8, &str> = theirs.iter().map(|(n, &c)| (c, n.as_str())).collect();
        for byte in 0..=u8::MAX {
            match (Opcode::try_from(byte), known.get(&byte)) {
                (Ok(op), Some(name)) => {
                    assert_eq!((op as u8, op.name()), (byte, *name), "byte {byte:#04x}")
                }
                (Err(b), None) => assert_eq!(b, byte),
                (got, want) => panic!("byte {byte:#04x}: {got:?}, pickletools says {want:?}"),
            }
        }
    }
}
