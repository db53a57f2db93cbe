//! Property tests: encoders and decoders agree on every message, and
//! incremental decoding does not depend on how the input is chunked.

use bytes::{Bytes, BytesMut};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use sluice_codecs::backend::{
    self, Authentication, BackendMessage, CopyResponse, DataRow, FieldDescription, Fields,
    TransactionStatus,
};
use sluice_codecs::frontend::{self, FrontendMessage, Target};
use sluice_codecs::startup::{self, ProtocolVersion, StartupPacket};
use sluice_codecs::{fuzzing, Decode, DecodeError, Limits};

const FRONTEND_TAGS: &[u8] = b"QPBDECSHXdcfFp";
const BACKEND_TAGS: &[u8] = b"RKSZTDCIEN123nstGHWdcVAv";

/// A protocol `String` value: any bytes but NUL.
fn cstr() -> impl Strategy<Value = Bytes> {
    vec(1u8..=255, 0..24).prop_map(Bytes::from)
}

fn non_empty_cstr() -> impl Strategy<Value = Bytes> {
    vec(1u8..=255, 1..24).prop_map(Bytes::from)
}

fn raw() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..48).prop_map(Bytes::from)
}

fn values() -> impl Strategy<Value = Vec<Option<Bytes>>> {
    vec(option::of(raw()), 0..6)
}

fn formats() -> impl Strategy<Value = Vec<i16>> {
    vec(any::<i16>(), 0..6)
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![Just(Target::Statement), Just(Target::Portal)]
}

fn unknown_tag(known: &'static [u8]) -> impl Strategy<Value = u8> {
    any::<u8>().prop_filter("tag must be unknown", move |t| !known.contains(t))
}

fn frontend_message() -> impl Strategy<Value = FrontendMessage> {
    prop_oneof![
        cstr().prop_map(|sql| FrontendMessage::Query { sql }),
        (cstr(), cstr(), vec(any::<u32>(), 0..6)).prop_map(|(name, sql, param_types)| {
            FrontendMessage::Parse {
                name,
                sql,
                param_types,
            }
        }),
        (cstr(), cstr(), formats(), values(), formats()).prop_map(
            |(portal, statement, param_formats, params, result_formats)| FrontendMessage::Bind {
                portal,
                statement,
                param_formats,
                params,
                result_formats,
            }
        ),
        (target(), cstr()).prop_map(|(target, name)| FrontendMessage::Describe { target, name }),
        (cstr(), any::<i32>())
            .prop_map(|(portal, max_rows)| FrontendMessage::Execute { portal, max_rows }),
        (target(), cstr()).prop_map(|(target, name)| FrontendMessage::Close { target, name }),
        Just(FrontendMessage::Sync),
        Just(FrontendMessage::Flush),
        Just(FrontendMessage::Terminate),
        raw().prop_map(FrontendMessage::CopyData),
        Just(FrontendMessage::CopyDone),
        cstr().prop_map(|message| FrontendMessage::CopyFail { message }),
        (any::<u32>(), formats(), values(), any::<i16>()).prop_map(
            |(oid, arg_formats, args, result_format)| FrontendMessage::FunctionCall {
                oid,
                arg_formats,
                args,
                result_format,
            }
        ),
        raw().prop_map(FrontendMessage::AuthResponse),
        (unknown_tag(FRONTEND_TAGS), raw())
            .prop_map(|(tag, body)| FrontendMessage::Unknown { tag, body }),
    ]
}

fn authentication() -> impl Strategy<Value = Authentication> {
    prop_oneof![
        Just(Authentication::Ok),
        Just(Authentication::KerberosV5),
        Just(Authentication::CleartextPassword),
        any::<[u8; 4]>().prop_map(|salt| Authentication::Md5Password { salt }),
        Just(Authentication::Gss),
        raw().prop_map(Authentication::GssContinue),
        Just(Authentication::Sspi),
        vec(non_empty_cstr(), 0..4).prop_map(|mechanisms| Authentication::Sasl { mechanisms }),
        raw().prop_map(Authentication::SaslContinue),
        raw().prop_map(Authentication::SaslFinal),
    ]
}

fn field_description() -> impl Strategy<Value = FieldDescription> {
    (
        cstr(),
        any::<u32>(),
        any::<i16>(),
        any::<u32>(),
        any::<i16>(),
        any::<i32>(),
        any::<i16>(),
    )
        .prop_map(
            |(name, table_oid, column_id, type_oid, type_size, type_modifier, format)| {
                FieldDescription {
                    name,
                    table_oid,
                    column_id,
                    type_oid,
                    type_size,
                    type_modifier,
                    format,
                }
            },
        )
}

fn fields() -> impl Strategy<Value = Fields> {
    vec((1u8..=255, cstr()), 0..6).prop_map(Fields)
}

fn copy_response() -> impl Strategy<Value = CopyResponse> {
    (any::<i8>(), formats()).prop_map(|(format, column_formats)| CopyResponse {
        format,
        column_formats,
    })
}

fn data_row() -> impl Strategy<Value = DataRow> {
    values().prop_map(|cols| {
        let cols: Vec<Option<&[u8]>> = cols.iter().map(|c| c.as_deref()).collect();
        DataRow::from_columns(&cols)
    })
}

fn status() -> impl Strategy<Value = TransactionStatus> {
    prop_oneof![
        Just(TransactionStatus::Idle),
        Just(TransactionStatus::InTransaction),
        Just(TransactionStatus::Failed),
    ]
}

fn cancel_key() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 4..=256).prop_map(Bytes::from)
}

fn backend_message() -> impl Strategy<Value = BackendMessage> {
    prop_oneof![
        authentication().prop_map(BackendMessage::Authentication),
        (any::<u32>(), cancel_key())
            .prop_map(|(pid, secret)| BackendMessage::BackendKeyData { pid, secret }),
        (cstr(), cstr()).prop_map(|(name, value)| BackendMessage::ParameterStatus { name, value }),
        status().prop_map(|status| BackendMessage::ReadyForQuery { status }),
        vec(field_description(), 0..5).prop_map(|fields| BackendMessage::RowDescription { fields }),
        data_row().prop_map(BackendMessage::DataRow),
        cstr().prop_map(|tag| BackendMessage::CommandComplete { tag }),
        Just(BackendMessage::EmptyQueryResponse),
        fields().prop_map(BackendMessage::ErrorResponse),
        fields().prop_map(BackendMessage::NoticeResponse),
        Just(BackendMessage::ParseComplete),
        Just(BackendMessage::BindComplete),
        Just(BackendMessage::CloseComplete),
        Just(BackendMessage::NoData),
        Just(BackendMessage::PortalSuspended),
        vec(any::<u32>(), 0..6).prop_map(|types| BackendMessage::ParameterDescription { types }),
        copy_response().prop_map(BackendMessage::CopyInResponse),
        copy_response().prop_map(BackendMessage::CopyOutResponse),
        copy_response().prop_map(BackendMessage::CopyBothResponse),
        raw().prop_map(BackendMessage::CopyData),
        Just(BackendMessage::CopyDone),
        option::of(raw()).prop_map(BackendMessage::FunctionCallResponse),
        (any::<u32>(), cstr(), cstr()).prop_map(|(pid, channel, payload)| {
            BackendMessage::NotificationResponse {
                pid,
                channel,
                payload,
            }
        }),
        (any::<u32>(), vec(cstr(), 0..4)).prop_map(|(newest_minor, unrecognized)| {
            BackendMessage::NegotiateProtocolVersion {
                newest_minor,
                unrecognized,
            }
        }),
        (unknown_tag(BACKEND_TAGS), raw())
            .prop_map(|(tag, body)| BackendMessage::Unknown { tag, body }),
    ]
}

fn startup_packet() -> impl Strategy<Value = StartupPacket> {
    prop_oneof![
        Just(StartupPacket::SslRequest),
        Just(StartupPacket::GssEncRequest),
        (any::<u32>(), cancel_key())
            .prop_map(|(pid, secret)| StartupPacket::CancelRequest { pid, secret }),
        (any::<u16>(), vec((non_empty_cstr(), cstr()), 0..8)).prop_map(|(minor, params)| {
            StartupPacket::Startup {
                version: ProtocolVersion { major: 3, minor },
                params,
            }
        }),
    ]
}

type DecodeFn<T> = fn(&mut BytesMut, &Limits) -> Result<Decode<T>, DecodeError>;

/// Decodes `data` fed in chunks of the given sizes (cycled), or all at once
/// when `chunks` is empty, until an error or the input runs out.
fn decode_chunked<T>(
    data: &[u8],
    chunks: &[usize],
    decode: DecodeFn<T>,
) -> (Vec<T>, Option<DecodeError>) {
    let limits = Limits::default();
    let mut buf = BytesMut::new();
    let mut fed = 0;
    let mut sizes = chunks.iter().cycle();
    let mut out = Vec::new();
    loop {
        match decode(&mut buf, &limits) {
            Ok(Decode::Frame(m)) => out.push(m),
            Ok(Decode::NeedMore(n)) => {
                assert!(n > 0);
                if fed == data.len() {
                    return (out, None);
                }
                let step = sizes.next().copied().unwrap_or(data.len());
                let end = (fed + step.max(1)).min(data.len());
                buf.extend_from_slice(&data[fed..end]);
                fed = end;
            }
            Err(e) => return (out, Some(e)),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn frontend_roundtrip(m in frontend_message()) {
        let mut buf = BytesMut::new();
        m.encode(&mut buf);
        prop_assert_eq!(frontend::decode(&mut buf, &Limits::default()), Ok(Decode::Frame(m)));
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn backend_roundtrip(m in backend_message()) {
        let mut buf = BytesMut::new();
        m.encode(&mut buf);
        prop_assert_eq!(backend::decode(&mut buf, &Limits::default()), Ok(Decode::Frame(m)));
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn startup_roundtrip(m in startup_packet()) {
        let mut buf = BytesMut::new();
        m.encode(&mut buf);
        prop_assert_eq!(startup::decode(&mut buf, &Limits::default()), Ok(Decode::Frame(m)));
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn frontend_stream_any_chunking(
        msgs in vec(frontend_message(), 0..12),
        chunks in vec(1usize..64, 1..8),
    ) {
        let mut wire = BytesMut::new();
        for m in &msgs {
            m.encode(&mut wire);
        }
        prop_assert_eq!(decode_chunked(&wire, &chunks, frontend::decode), (msgs, None));
    }

    #[test]
    fn backend_stream_any_chunking(
        msgs in vec(backend_message(), 0..12),
        chunks in vec(1usize..64, 1..8),
    ) {
        let mut wire = BytesMut::new();
        for m in &msgs {
            m.encode(&mut wire);
        }
        prop_assert_eq!(decode_chunked(&wire, &chunks, backend::decode), (msgs, None));
    }

    #[test]
    fn startup_stream_any_chunking(
        msgs in vec(startup_packet(), 0..4),
        chunks in vec(1usize..64, 1..8),
    ) {
        let mut wire = BytesMut::new();
        for m in &msgs {
            m.encode(&mut wire);
        }
        prop_assert_eq!(decode_chunked(&wire, &chunks, startup::decode), (msgs, None));
    }

    #[test]
    fn arbitrary_bytes_any_chunking_same_frames(
        data in vec(any::<u8>(), 0..512),
        chunks in vec(1usize..32, 1..8),
    ) {
        prop_assert_eq!(
            decode_chunked(&data, &chunks, frontend::decode),
            decode_chunked(&data, &[], frontend::decode)
        );
        prop_assert_eq!(
            decode_chunked(&data, &chunks, backend::decode),
            decode_chunked(&data, &[], backend::decode)
        );
        prop_assert_eq!(
            decode_chunked(&data, &chunks, startup::decode),
            decode_chunked(&data, &[], startup::decode)
        );
    }

    /// Random bodies behind a valid header of a known tag reach every body
    /// grammar; the fuzz bodies assert that whatever decodes re-encodes
    /// byte for byte.
    #[test]
    fn random_bodies_under_known_tags(
        f in proptest::sample::select(FRONTEND_TAGS),
        b in proptest::sample::select(BACKEND_TAGS),
        body in vec(any::<u8>(), 0..64),
    ) {
        for tag in [f, b] {
            let mut frame = vec![tag];
            frame.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
            frame.extend_from_slice(&body);
            fuzzing::frontend_stream(&frame);
            fuzzing::backend_stream(&frame);
        }
        let mut packet = (body.len() as u32 + 4).to_be_bytes().to_vec();
        packet.extend_from_slice(&body);
        fuzzing::startup(&packet);
    }

    #[test]
    fn fuzz_bodies_hold_on_arbitrary_bytes(data in vec(any::<u8>(), 0..256)) {
        fuzzing::frontend_stream(&data);
        fuzzing::backend_stream(&data);
        fuzzing::startup(&data);
    }
}
