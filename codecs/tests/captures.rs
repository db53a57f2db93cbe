//! Table-driven tests over byte captures of every message type, built by hand
//! from the protocol documentation (protocol-message-formats.html).
//!
//! Each valid capture is checked four ways: it decodes to the expected value
//! consuming exactly its bytes, the expected value encodes back to the same
//! bytes, and every strict prefix yields `NeedMore` with the exact missing
//! count and leaves the buffer untouched. Invalid captures name the error they
//! must produce; regressions go at the end of the relevant table.

use bytes::{Bytes, BytesMut};
use sluice_codecs::backend::{
    self, Authentication, BackendMessage, CopyResponse, DataRow, FieldDescription, Fields,
    TransactionStatus,
};
use sluice_codecs::frontend::{self, FrontendMessage, SaslInitialResponse, Target};
use sluice_codecs::startup::{self, ProtocolVersion, StartupPacket};
use sluice_codecs::{Decode, DecodeError, Limits, STARTUP_TAG};

fn b(s: &'static [u8]) -> Bytes {
    Bytes::from_static(s)
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

type DecodeFn<T> = fn(&mut BytesMut, &Limits) -> Result<Decode<T>, DecodeError>;

/// Runs the four checks on one capture. `header` is how many bytes are needed
/// before the length is known (5 for typed messages, 4 for startup packets).
fn check_capture<T: PartialEq + std::fmt::Debug>(
    name: &str,
    wire: &[u8],
    expected: &T,
    header: usize,
    decode: DecodeFn<T>,
    encode: impl Fn(&T, &mut BytesMut),
) {
    let limits = Limits::default();

    let mut buf = BytesMut::from(wire);
    buf.extend_from_slice(b"\xAAnext");
    match decode(&mut buf, &limits) {
        Ok(Decode::Frame(m)) => assert_eq!(&m, expected, "{name}: decoded value"),
        other => panic!("{name}: expected a frame, got {other:?}"),
    }
    assert_eq!(
        &buf[..],
        b"\xAAnext",
        "{name}: must consume exactly the frame"
    );

    let mut out = BytesMut::new();
    encode(expected, &mut out);
    assert_eq!(&out[..], wire, "{name}: encoding");

    for k in 0..wire.len() {
        let mut buf = BytesMut::from(&wire[..k]);
        let want = if k < header {
            header - k
        } else {
            wire.len() - k
        };
        assert_eq!(
            decode(&mut buf, &limits),
            Ok(Decode::NeedMore(want)),
            "{name}: prefix of {k} bytes"
        );
        assert_eq!(&buf[..], &wire[..k], "{name}: prefix {k} must be untouched");
    }
}

fn frontend_table() -> Vec<(&'static str, Vec<u8>, FrontendMessage)> {
    vec![
        (
            "Query",
            b"Q\0\0\0\x0dSELECT 1\0".to_vec(),
            FrontendMessage::Query {
                sql: b(b"SELECT 1"),
            },
        ),
        (
            "Query empty",
            b"Q\0\0\0\x05\0".to_vec(),
            FrontendMessage::Query { sql: b(b"") },
        ),
        (
            "Parse",
            b"P\0\0\0\x17s1\0SELECT $1\0\0\x01\0\0\0\x17".to_vec(),
            FrontendMessage::Parse {
                name: b(b"s1"),
                sql: b(b"SELECT $1"),
                param_types: vec![23],
            },
        ),
        (
            "Parse unnamed, no types",
            b"P\0\0\0\x0e\0SELECT\0\0\0".to_vec(),
            FrontendMessage::Parse {
                name: b(b""),
                sql: b(b"SELECT"),
                param_types: vec![],
            },
        ),
        (
            "Bind",
            b"B\0\0\0\x1e\0s1\0\0\x01\0\x01\0\x02\0\0\0\x04\0\0\0\x2a\xff\xff\xff\xff\0\x01\0\x01"
                .to_vec(),
            FrontendMessage::Bind {
                portal: b(b""),
                statement: b(b"s1"),
                param_formats: vec![1],
                params: vec![Some(b(b"\0\0\0\x2a")), None],
                result_formats: vec![1],
            },
        ),
        (
            "Bind empty value",
            b"B\0\0\0\x12p\0s\0\0\0\0\x01\0\0\0\0\0\0".to_vec(),
            FrontendMessage::Bind {
                portal: b(b"p"),
                statement: b(b"s"),
                param_formats: vec![],
                params: vec![Some(b(b""))],
                result_formats: vec![],
            },
        ),
        (
            "Describe portal",
            b"D\0\0\0\x06P\0".to_vec(),
            FrontendMessage::Describe {
                target: Target::Portal,
                name: b(b""),
            },
        ),
        (
            "Describe statement",
            b"D\0\0\0\x08Ss1\0".to_vec(),
            FrontendMessage::Describe {
                target: Target::Statement,
                name: b(b"s1"),
            },
        ),
        (
            "Execute",
            b"E\0\0\0\x09\0\0\0\0\0".to_vec(),
            FrontendMessage::Execute {
                portal: b(b""),
                max_rows: 0,
            },
        ),
        (
            "Execute with limit",
            b"E\0\0\0\x0bp1\0\0\0\0\x64".to_vec(),
            FrontendMessage::Execute {
                portal: b(b"p1"),
                max_rows: 100,
            },
        ),
        (
            "Close statement",
            b"C\0\0\0\x08Ss1\0".to_vec(),
            FrontendMessage::Close {
                target: Target::Statement,
                name: b(b"s1"),
            },
        ),
        ("Sync", b"S\0\0\0\x04".to_vec(), FrontendMessage::Sync),
        ("Flush", b"H\0\0\0\x04".to_vec(), FrontendMessage::Flush),
        (
            "Terminate",
            b"X\0\0\0\x04".to_vec(),
            FrontendMessage::Terminate,
        ),
        (
            "CopyData",
            b"d\0\0\0\x0a1\tfoo\n".to_vec(),
            FrontendMessage::CopyData(b(b"1\tfoo\n")),
        ),
        (
            "CopyDone",
            b"c\0\0\0\x04".to_vec(),
            FrontendMessage::CopyDone,
        ),
        (
            "CopyFail",
            b"f\0\0\0\x0aabort\0".to_vec(),
            FrontendMessage::CopyFail {
                message: b(b"abort"),
            },
        ),
        (
            "FunctionCall",
            b"F\0\0\0\x14\0\0\x06\x3e\0\0\0\x01\0\0\0\x02ab\0\0".to_vec(),
            FrontendMessage::FunctionCall {
                oid: 1598,
                arg_formats: vec![],
                args: vec![Some(b(b"ab"))],
                result_format: 0,
            },
        ),
        (
            "PasswordMessage",
            b"p\0\0\0\x0bsecret\0".to_vec(),
            FrontendMessage::AuthResponse(b(b"secret\0")),
        ),
        (
            "SASLInitialResponse",
            b"p\0\0\0\x21SCRAM-SHA-256\0\0\0\0\x0bn,,n=,r=abc".to_vec(),
            FrontendMessage::AuthResponse(b(b"SCRAM-SHA-256\0\0\0\0\x0bn,,n=,r=abc")),
        ),
        (
            "Unknown tag kept",
            b"?\0\0\0\x06hi".to_vec(),
            FrontendMessage::Unknown {
                tag: b'?',
                body: b(b"hi"),
            },
        ),
        (
            "Unknown tag, empty body",
            b"\x01\0\0\0\x04".to_vec(),
            FrontendMessage::Unknown {
                tag: 1,
                body: b(b""),
            },
        ),
    ]
}

fn backend_table() -> Vec<(&'static str, Vec<u8>, BackendMessage)> {
    use Authentication as A;
    let auth = |a| BackendMessage::Authentication(a);
    vec![
        (
            "AuthenticationOk",
            b"R\0\0\0\x08\0\0\0\0".to_vec(),
            auth(A::Ok),
        ),
        (
            "AuthenticationKerberosV5",
            b"R\0\0\0\x08\0\0\0\x02".to_vec(),
            auth(A::KerberosV5),
        ),
        (
            "AuthenticationCleartextPassword",
            b"R\0\0\0\x08\0\0\0\x03".to_vec(),
            auth(A::CleartextPassword),
        ),
        (
            "AuthenticationMD5Password",
            b"R\0\0\0\x0c\0\0\0\x05\x01\x02\x03\x04".to_vec(),
            auth(A::Md5Password { salt: [1, 2, 3, 4] }),
        ),
        (
            "AuthenticationGSS",
            b"R\0\0\0\x08\0\0\0\x07".to_vec(),
            auth(A::Gss),
        ),
        (
            "AuthenticationGSSContinue",
            b"R\0\0\0\x0b\0\0\0\x08tok".to_vec(),
            auth(A::GssContinue(b(b"tok"))),
        ),
        (
            "AuthenticationSSPI",
            b"R\0\0\0\x08\0\0\0\x09".to_vec(),
            auth(A::Sspi),
        ),
        (
            "AuthenticationSASL",
            b"R\0\0\0\x2a\0\0\0\x0aSCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0".to_vec(),
            auth(A::Sasl {
                mechanisms: vec![b(b"SCRAM-SHA-256-PLUS"), b(b"SCRAM-SHA-256")],
            }),
        ),
        (
            "AuthenticationSASLContinue",
            b"R\0\0\0\x1a\0\0\0\x0br=abc,s=xyz,i=4096".to_vec(),
            auth(A::SaslContinue(b(b"r=abc,s=xyz,i=4096"))),
        ),
        (
            "AuthenticationSASLFinal",
            b"R\0\0\0\x0d\0\0\0\x0cv=sig".to_vec(),
            auth(A::SaslFinal(b(b"v=sig"))),
        ),
        (
            "BackendKeyData 3.0",
            b"K\0\0\0\x0c\0\0\x04\xd2\xde\xad\xbe\xef".to_vec(),
            BackendMessage::BackendKeyData {
                pid: 1234,
                secret: b(b"\xde\xad\xbe\xef"),
            },
        ),
        (
            "BackendKeyData 3.2 (32-byte key)",
            cat(&[b"K\0\0\0\x28\0\0\x04\xd2", &[7u8; 32]]),
            BackendMessage::BackendKeyData {
                pid: 1234,
                secret: Bytes::from(vec![7u8; 32]),
            },
        ),
        (
            "ParameterStatus",
            b"S\0\0\0\x19client_encoding\0UTF8\0".to_vec(),
            BackendMessage::ParameterStatus {
                name: b(b"client_encoding"),
                value: b(b"UTF8"),
            },
        ),
        (
            "ReadyForQuery idle",
            b"Z\0\0\0\x05I".to_vec(),
            BackendMessage::ReadyForQuery {
                status: TransactionStatus::Idle,
            },
        ),
        (
            "ReadyForQuery in transaction",
            b"Z\0\0\0\x05T".to_vec(),
            BackendMessage::ReadyForQuery {
                status: TransactionStatus::InTransaction,
            },
        ),
        (
            "ReadyForQuery failed",
            b"Z\0\0\0\x05E".to_vec(),
            BackendMessage::ReadyForQuery {
                status: TransactionStatus::Failed,
            },
        ),
        (
            "RowDescription",
            b"T\0\0\0\x1b\0\x01id\0\0\0\x40\0\0\x01\0\0\0\x17\0\x04\xff\xff\xff\xff\0\0".to_vec(),
            BackendMessage::RowDescription {
                fields: vec![FieldDescription {
                    name: b(b"id"),
                    table_oid: 16384,
                    column_id: 1,
                    type_oid: 23,
                    type_size: 4,
                    type_modifier: -1,
                    format: 0,
                }],
            },
        ),
        (
            "DataRow",
            b"D\0\0\0\x10\0\x02\0\0\0\x0242\xff\xff\xff\xff".to_vec(),
            BackendMessage::DataRow(DataRow::from_columns(&[Some(b"42"), None])),
        ),
        (
            "DataRow no columns",
            b"D\0\0\0\x06\0\0".to_vec(),
            BackendMessage::DataRow(DataRow::from_columns(&[])),
        ),
        (
            "CommandComplete",
            b"C\0\0\0\x0dSELECT 1\0".to_vec(),
            BackendMessage::CommandComplete {
                tag: b(b"SELECT 1"),
            },
        ),
        (
            "EmptyQueryResponse",
            b"I\0\0\0\x04".to_vec(),
            BackendMessage::EmptyQueryResponse,
        ),
        (
            "ErrorResponse",
            b"E\0\0\0\x29SERROR\0VERROR\0C42P01\0Mno such table\0\0".to_vec(),
            BackendMessage::ErrorResponse(Fields(vec![
                (b'S', b(b"ERROR")),
                (b'V', b(b"ERROR")),
                (b'C', b(b"42P01")),
                (b'M', b(b"no such table")),
            ])),
        ),
        (
            "NoticeResponse",
            b"N\0\0\0\x11SNOTICE\0MHi\0\0".to_vec(),
            BackendMessage::NoticeResponse(Fields(vec![(b'S', b(b"NOTICE")), (b'M', b(b"Hi"))])),
        ),
        (
            "ParseComplete",
            b"1\0\0\0\x04".to_vec(),
            BackendMessage::ParseComplete,
        ),
        (
            "BindComplete",
            b"2\0\0\0\x04".to_vec(),
            BackendMessage::BindComplete,
        ),
        (
            "CloseComplete",
            b"3\0\0\0\x04".to_vec(),
            BackendMessage::CloseComplete,
        ),
        ("NoData", b"n\0\0\0\x04".to_vec(), BackendMessage::NoData),
        (
            "PortalSuspended",
            b"s\0\0\0\x04".to_vec(),
            BackendMessage::PortalSuspended,
        ),
        (
            "ParameterDescription",
            b"t\0\0\0\x0e\0\x02\0\0\0\x17\0\0\0\x19".to_vec(),
            BackendMessage::ParameterDescription {
                types: vec![23, 25],
            },
        ),
        (
            "CopyInResponse",
            b"G\0\0\0\x0b\0\0\x02\0\0\0\0".to_vec(),
            BackendMessage::CopyInResponse(CopyResponse {
                format: 0,
                column_formats: vec![0, 0],
            }),
        ),
        (
            "CopyOutResponse",
            b"H\0\0\0\x09\x01\0\x01\0\x01".to_vec(),
            BackendMessage::CopyOutResponse(CopyResponse {
                format: 1,
                column_formats: vec![1],
            }),
        ),
        (
            "CopyBothResponse",
            b"W\0\0\0\x07\0\0\0".to_vec(),
            BackendMessage::CopyBothResponse(CopyResponse {
                format: 0,
                column_formats: vec![],
            }),
        ),
        (
            "CopyData",
            b"d\0\0\0\x07abc".to_vec(),
            BackendMessage::CopyData(b(b"abc")),
        ),
        (
            "CopyDone",
            b"c\0\0\0\x04".to_vec(),
            BackendMessage::CopyDone,
        ),
        (
            "FunctionCallResponse",
            b"V\0\0\0\x09\0\0\0\x01t".to_vec(),
            BackendMessage::FunctionCallResponse(Some(b(b"t"))),
        ),
        (
            "FunctionCallResponse NULL",
            b"V\0\0\0\x08\xff\xff\xff\xff".to_vec(),
            BackendMessage::FunctionCallResponse(None),
        ),
        (
            "NotificationResponse",
            b"A\0\0\0\x13\0\0\0\x4dchan\0hello\0".to_vec(),
            BackendMessage::NotificationResponse {
                pid: 77,
                channel: b(b"chan"),
                payload: b(b"hello"),
            },
        ),
        (
            "NegotiateProtocolVersion",
            b"v\0\0\0\x15\0\0\0\0\0\0\0\x01_pq_.foo\0".to_vec(),
            BackendMessage::NegotiateProtocolVersion {
                newest_minor: 0,
                unrecognized: vec![b(b"_pq_.foo")],
            },
        ),
        (
            "Unknown tag kept",
            b"!\0\0\0\x07xyz".to_vec(),
            BackendMessage::Unknown {
                tag: b'!',
                body: b(b"xyz"),
            },
        ),
    ]
}

fn startup_table() -> Vec<(&'static str, Vec<u8>, StartupPacket)> {
    vec![
        (
            "SSLRequest",
            b"\0\0\0\x08\x04\xd2\x16\x2f".to_vec(),
            StartupPacket::SslRequest,
        ),
        (
            "GSSENCRequest",
            b"\0\0\0\x08\x04\xd2\x16\x30".to_vec(),
            StartupPacket::GssEncRequest,
        ),
        (
            "CancelRequest 3.0",
            b"\0\0\0\x10\x04\xd2\x16\x2e\0\0\x04\xd2\xde\xad\xbe\xef".to_vec(),
            StartupPacket::CancelRequest {
                pid: 1234,
                secret: b(b"\xde\xad\xbe\xef"),
            },
        ),
        (
            "CancelRequest 3.2 (32-byte key)",
            cat(&[b"\0\0\0\x2c\x04\xd2\x16\x2e\0\0\x04\xd2", &[9u8; 32]]),
            StartupPacket::CancelRequest {
                pid: 1234,
                secret: Bytes::from(vec![9u8; 32]),
            },
        ),
        (
            "StartupMessage 3.0",
            b"\0\0\0\x37\0\x03\0\0user\0alice\0database\0app\0application_name\0psql\0\0".to_vec(),
            StartupPacket::Startup {
                version: ProtocolVersion::V3_0,
                params: vec![
                    (b(b"user"), b(b"alice")),
                    (b(b"database"), b(b"app")),
                    (b(b"application_name"), b(b"psql")),
                ],
            },
        ),
        (
            "StartupMessage 3.2 with _pq_ option",
            b"\0\0\0\x1e\0\x03\0\x02user\0bob\0_pq_.opt\0on\0\0".to_vec(),
            StartupPacket::Startup {
                version: ProtocolVersion::V3_2,
                params: vec![(b(b"user"), b(b"bob")), (b(b"_pq_.opt"), b(b"on"))],
            },
        ),
        (
            "StartupMessage 3.0, no params, empty value allowed",
            b"\0\0\0\x12\0\x03\0\0options\0\0\0".to_vec(),
            StartupPacket::Startup {
                version: ProtocolVersion::V3_0,
                params: vec![(b(b"options"), b(b""))],
            },
        ),
    ]
}

#[test]
fn frontend_captures() {
    for (name, wire, expected) in frontend_table() {
        check_capture(
            name,
            &wire,
            &expected,
            5,
            frontend::decode,
            FrontendMessage::encode,
        );
    }
}

#[test]
fn backend_captures() {
    for (name, wire, expected) in backend_table() {
        check_capture(
            name,
            &wire,
            &expected,
            5,
            backend::decode,
            BackendMessage::encode,
        );
    }
}

#[test]
fn startup_captures() {
    for (name, wire, expected) in startup_table() {
        check_capture(
            name,
            &wire,
            &expected,
            4,
            startup::decode,
            StartupPacket::encode,
        );
    }
}

fn malformed(tag: u8, what: &'static str) -> DecodeError {
    DecodeError::Malformed { tag, what }
}

const NO_NUL: &str = "string without NUL terminator";
const TRAILING: &str = "trailing bytes after the message";
const SHORT: &str = "message body ends early";
const COUNT: &str = "element count exceeds the message body";

#[test]
fn frontend_rejects() {
    let table: Vec<(&str, Vec<u8>, DecodeError)> = vec![
        (
            "Query without NUL",
            b"Q\0\0\0\x08abcd".to_vec(),
            malformed(b'Q', NO_NUL),
        ),
        (
            "Query with bytes after NUL",
            b"Q\0\0\0\x08ab\0c".to_vec(),
            malformed(b'Q', TRAILING),
        ),
        (
            "Sync with a body",
            b"S\0\0\0\x05x".to_vec(),
            malformed(b'S', TRAILING),
        ),
        (
            "Describe bad target",
            b"D\0\0\0\x06X\0".to_vec(),
            malformed(b'D', "target must be 'S' (statement) or 'P' (portal)"),
        ),
        (
            "Execute truncated",
            b"E\0\0\0\x07\0\0\0".to_vec(),
            malformed(b'E', SHORT),
        ),
        (
            "Bind claims 65535 params",
            b"B\0\0\0\x0c\0\0\0\0\xff\xff\0\0".to_vec(),
            malformed(b'B', COUNT),
        ),
        (
            "Bind negative length",
            b"B\0\0\0\x10\0\0\0\0\0\x01\xff\xff\xff\xfe\0\0".to_vec(),
            malformed(b'B', "negative value length other than -1"),
        ),
        (
            "Bind value longer than body",
            b"B\0\0\0\x10\0\0\0\0\0\x01\0\0\0\x09\0\0".to_vec(),
            malformed(b'B', "value length exceeds the message body"),
        ),
        (
            "Parse type count exceeds body",
            b"P\0\0\0\x0a\0\0\0\x02\0\0".to_vec(),
            malformed(b'P', COUNT),
        ),
        (
            "FunctionCall missing result format",
            b"F\0\0\0\x0c\0\0\0\x01\0\0\0\0".to_vec(),
            malformed(b'F', SHORT),
        ),
        (
            "length 3",
            b"Q\0\0\0\x03".to_vec(),
            DecodeError::BadLength { tag: b'Q', len: 3 },
        ),
        (
            "2 GiB header, 5 bytes present",
            b"Q\x80\0\0\0".to_vec(),
            DecodeError::TooLarge {
                tag: b'Q',
                len: 1 << 31,
                limit: 1 << 30,
            },
        ),
    ];
    for (name, wire, want) in table {
        let mut buf = BytesMut::from(&wire[..]);
        assert_eq!(
            frontend::decode(&mut buf, &Limits::default()),
            Err(want),
            "{name}"
        );
    }
}

#[test]
fn backend_rejects() {
    let table: Vec<(&str, Vec<u8>, DecodeError)> = vec![
        (
            "ReadyForQuery bad status",
            b"Z\0\0\0\x05X".to_vec(),
            malformed(b'Z', "transaction status must be 'I', 'T' or 'E'"),
        ),
        (
            "DataRow fewer columns than counted",
            b"D\0\0\0\x0c\0\x02\0\0\0\x0242".to_vec(),
            malformed(b'D', SHORT),
        ),
        (
            "DataRow negative length",
            b"D\0\0\0\x0a\0\x01\xff\xff\xff\xfb".to_vec(),
            malformed(b'D', "negative value length other than -1"),
        ),
        (
            "DataRow column past the end",
            b"D\0\0\0\x0c\0\x01\0\0\0\x0342".to_vec(),
            malformed(b'D', "value length exceeds the message body"),
        ),
        (
            "DataRow trailing bytes",
            b"D\0\0\0\x0d\0\x01\0\0\0\x0242!".to_vec(),
            malformed(b'D', TRAILING),
        ),
        (
            "Authentication unknown code",
            b"R\0\0\0\x08\0\0\0\x63".to_vec(),
            malformed(b'R', "unknown authentication request code"),
        ),
        (
            "AuthenticationOk with data",
            b"R\0\0\0\x09\0\0\0\0x".to_vec(),
            malformed(b'R', TRAILING),
        ),
        (
            "MD5 salt short",
            b"R\0\0\0\x0a\0\0\0\x05\x01\x02".to_vec(),
            malformed(b'R', SHORT),
        ),
        (
            "SASL list without terminator",
            b"R\0\0\0\x16\0\0\0\x0aSCRAM-SHA-256\0".to_vec(),
            malformed(b'R', NO_NUL),
        ),
        (
            "BackendKeyData short key",
            b"K\0\0\0\x0a\0\0\0\x01\xde\xad".to_vec(),
            malformed(b'K', "cancel key must be 4 to 256 bytes"),
        ),
        (
            "ErrorResponse missing terminator",
            b"E\0\0\0\x0bSERROR\0".to_vec(),
            malformed(b'E', SHORT),
        ),
        (
            "RowDescription count exceeds body",
            b"T\0\0\0\x06\0\x05".to_vec(),
            malformed(b'T', COUNT),
        ),
        (
            "NegotiateProtocolVersion huge count",
            b"v\0\0\0\x0c\0\0\0\0\xff\xff\xff\xff".to_vec(),
            malformed(b'v', COUNT),
        ),
        (
            "CopyOutResponse column formats short",
            b"H\0\0\0\x08\0\0\x01\0".to_vec(),
            malformed(b'H', COUNT),
        ),
        (
            "2 GiB DataRow header",
            b"D\x80\0\0\0".to_vec(),
            DecodeError::TooLarge {
                tag: b'D',
                len: 1 << 31,
                limit: 1 << 30,
            },
        ),
        (
            "length 0",
            b"Z\0\0\0\0".to_vec(),
            DecodeError::BadLength { tag: b'Z', len: 0 },
        ),
    ];
    for (name, wire, want) in table {
        let mut buf = BytesMut::from(&wire[..]);
        assert_eq!(
            backend::decode(&mut buf, &Limits::default()),
            Err(want),
            "{name}"
        );
    }
}

#[test]
fn startup_rejects() {
    let t = STARTUP_TAG;
    let table: Vec<(&str, Vec<u8>, DecodeError)> = vec![
        (
            "length 7",
            b"\0\0\0\x07".to_vec(),
            DecodeError::BadLength { tag: t, len: 7 },
        ),
        (
            "over 10 000 bytes, only the length present",
            b"\0\0\x27\x11".to_vec(),
            DecodeError::TooLarge {
                tag: t,
                len: 10_001,
                limit: 10_000,
            },
        ),
        (
            "2 GiB claim",
            b"\x80\0\0\0".to_vec(),
            DecodeError::TooLarge {
                tag: t,
                len: 1 << 31,
                limit: 10_000,
            },
        ),
        (
            "protocol 2.0",
            b"\0\0\0\x09\0\x02\0\0\0".to_vec(),
            DecodeError::UnsupportedProtocol { major: 2, minor: 0 },
        ),
        (
            "protocol 4.1",
            b"\0\0\0\x09\0\x04\0\x01\0".to_vec(),
            DecodeError::UnsupportedProtocol { major: 4, minor: 1 },
        ),
        (
            "params without final terminator",
            b"\0\0\0\x11\0\x03\0\0user\0bob\0".to_vec(),
            malformed(t, NO_NUL),
        ),
        (
            "bytes after the terminator",
            b"\0\0\0\x0a\0\x03\0\0\0x".to_vec(),
            malformed(t, TRAILING),
        ),
        (
            "name without value",
            b"\0\0\0\x0e\0\x03\0\0user\0\0".to_vec(),
            malformed(t, NO_NUL),
        ),
        (
            "SSLRequest with a body",
            b"\0\0\0\x0c\x04\xd2\x16\x2f\0\0\0\0".to_vec(),
            malformed(t, TRAILING),
        ),
        (
            "CancelRequest 3-byte key",
            b"\0\0\0\x0f\x04\xd2\x16\x2e\0\0\0\x01abc".to_vec(),
            malformed(t, "cancel key must be 4 to 256 bytes"),
        ),
        (
            "CancelRequest 257-byte key",
            cat(&[b"\0\0\x01\x0d\x04\xd2\x16\x2e\0\0\0\x01", &[1u8; 257]]),
            malformed(t, "cancel key must be 4 to 256 bytes"),
        ),
    ];
    for (name, wire, want) in table {
        let mut buf = BytesMut::from(&wire[..]);
        assert_eq!(
            startup::decode(&mut buf, &Limits::default()),
            Err(want),
            "{name}"
        );
    }
}

#[test]
fn auth_limits_refuse_large_auth_messages_from_the_header() {
    // A 'p' message claiming 100 KiB with only its header present.
    let mut buf = BytesMut::from(&b"p\0\x01\x90\0"[..]);
    assert_eq!(
        frontend::decode(&mut buf, &Limits::auth()),
        Err(DecodeError::TooLarge {
            tag: b'p',
            len: 0x0001_9000,
            limit: 64 * 1024
        })
    );
    assert_eq!(buf.len(), 5);
    assert_eq!(
        frontend::decode(&mut buf, &Limits::default()),
        Ok(Decode::NeedMore(0x0001_9000 + 1 - 5))
    );
}

#[test]
fn auth_response_helpers() {
    assert_eq!(frontend::password(&b(b"secret\0")), Ok(b(b"secret")));
    assert_eq!(
        frontend::password(&b(b"secret")),
        Err(malformed(b'p', NO_NUL))
    );
    assert_eq!(
        frontend::password(&b(b"a\0b")),
        Err(malformed(b'p', TRAILING))
    );

    assert_eq!(
        frontend::sasl_initial_response(&b(b"SCRAM-SHA-256\0\0\0\0\x0bn,,n=,r=abc")),
        Ok(SaslInitialResponse {
            mechanism: b(b"SCRAM-SHA-256"),
            data: Some(b(b"n,,n=,r=abc")),
        })
    );
    assert_eq!(
        frontend::sasl_initial_response(&b(b"SCRAM-SHA-256\0\xff\xff\xff\xff")),
        Ok(SaslInitialResponse {
            mechanism: b(b"SCRAM-SHA-256"),
            data: None,
        })
    );
    assert_eq!(
        frontend::sasl_initial_response(&b(b"SCRAM-SHA-256\0\0\0\0\x05abc")),
        Err(malformed(b'p', "value length exceeds the message body"))
    );

    let mut out = BytesMut::new();
    frontend::encode_password(&mut out, b"secret");
    assert_eq!(&out[..], b"p\0\0\0\x0bsecret\0");

    out.clear();
    frontend::encode_sasl_initial_response(&mut out, "SCRAM-SHA-256", b"n,,n=,r=abc");
    assert_eq!(&out[..], b"p\0\0\0\x21SCRAM-SHA-256\0\0\0\0\x0bn,,n=,r=abc");

    out.clear();
    frontend::encode_sasl_response(&mut out, b"c=biws,r=abc,p=xyz");
    assert_eq!(&out[..], b"p\0\0\0\x16c=biws,r=abc,p=xyz");
}

#[test]
fn encode_error_and_notice_decode_back() {
    let mut out = BytesMut::new();
    backend::encode_error(
        &mut out,
        "ERROR",
        "42501",
        "permission denied: policy \"no-ddl\"",
        Some("DROP is not allowed on resource app"),
        Some("request access with `sluice grant`"),
    );
    backend::encode_notice(&mut out, "NOTICE", "00000", "waiting for approval", None);
    let limits = Limits::default();
    let Ok(Decode::Frame(BackendMessage::ErrorResponse(f))) = backend::decode(&mut out, &limits)
    else {
        panic!("not an ErrorResponse");
    };
    assert_eq!(f.sqlstate(), Some(&b(b"42501")));
    assert_eq!(f.severity(), Some(&b(b"ERROR")));
    assert_eq!(f.get(b'S'), Some(&b(b"ERROR")));
    assert_eq!(
        f.message(),
        Some(&b(b"permission denied: policy \"no-ddl\""))
    );
    assert_eq!(
        f.get(b'D'),
        Some(&b(b"DROP is not allowed on resource app"))
    );
    assert_eq!(f.get(b'H'), Some(&b(b"request access with `sluice grant`")));
    let Ok(Decode::Frame(BackendMessage::NoticeResponse(n))) = backend::decode(&mut out, &limits)
    else {
        panic!("not a NoticeResponse");
    };
    assert_eq!(n.0.len(), 4);
    assert_eq!(n.message(), Some(&b(b"waiting for approval")));
    assert!(out.is_empty());
}

#[test]
fn gateway_text_with_nul_cannot_break_framing() {
    // A NUL in composed text would end the field early; it is dropped instead.
    let mut out = BytesMut::new();
    backend::encode_error(&mut out, "ERROR", "42501", "bad\0name", None, None);
    let Ok(Decode::Frame(BackendMessage::ErrorResponse(f))) =
        backend::decode(&mut out, &Limits::default())
    else {
        panic!("not an ErrorResponse");
    };
    assert_eq!(f.message(), Some(&b(b"badname")));
}

#[test]
fn data_row_columns_are_slices_of_the_frame() {
    let mut buf = BytesMut::from(&b"D\0\0\0\x15\0\x03\0\0\0\x0242\xff\xff\xff\xff\0\0\0\x01x"[..]);
    let Ok(Decode::Frame(BackendMessage::DataRow(row))) =
        backend::decode(&mut buf, &Limits::default())
    else {
        panic!("not a DataRow");
    };
    assert_eq!(row.len(), 3);
    assert!(!row.is_empty());
    let cols: Vec<_> = row.columns().collect();
    assert_eq!(cols, vec![Some(b(b"42")), None, Some(b(b"x"))]);
    let body = row.body().as_ptr_range();
    let first = cols[0]
        .as_ref()
        .map(|c| c.as_ptr())
        .unwrap_or(std::ptr::null());
    assert!(body.contains(&first), "column must point into the frame");
    let raw: Vec<_> = row.raw_columns().collect();
    assert_eq!(raw, vec![Some(&b"42"[..]), None, Some(&b"x"[..])]);
    assert_eq!(row, DataRow::from_columns(&[Some(b"42"), None, Some(b"x")]));
}

#[test]
fn stream_of_captures_decodes_in_order() {
    let table = backend_table();
    let mut buf = BytesMut::new();
    for (_, wire, _) in &table {
        buf.extend_from_slice(wire);
    }
    for (name, _, expected) in &table {
        assert_eq!(
            backend::decode(&mut buf, &Limits::default()),
            Ok(Decode::Frame(expected.clone())),
            "{name}"
        );
    }
    assert_eq!(
        backend::decode(&mut buf, &Limits::default()),
        Ok(Decode::NeedMore(5))
    );
}
