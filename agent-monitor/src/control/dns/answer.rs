//! DNS messages (hickory-proto for the wire format, nothing hand-parsed): the question an
//! agent asks, the refusal it gets for a name outside its scope, and the addresses an
//! upstream answer holds.

use std::net::IpAddr;

use hickory_proto::{
    op::{Message, MessageType, OpCode, Query, ResponseCode},
    rr::{RData, RecordType},
};

use super::{DnsError, names};

/// What a refused question is answered with (`--dns-refuse`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Refusal {
    /// RCODE 5: the resolver will not answer (the default).
    #[default]
    Refused,
    /// RCODE 3: the name does not exist.
    Nxdomain,
}

/// One question from an agent.
#[derive(Debug, Clone)]
pub(crate) struct Question {
    pub(crate) id: u16,
    /// Canonical (lowercase, no trailing dot).
    pub(crate) name: String,
    pub(crate) qtype: RecordType,
    message: Message,
}

/// Parses an agent's query: a standard query with exactly one question.
pub(crate) fn parse_query(packet: &[u8]) -> Result<Question, DnsError> {
    let message = Message::from_vec(packet).map_err(|e| DnsError::Malformed(e.to_string()))?;
    if message.metadata.message_type != MessageType::Query
        || message.metadata.op_code != OpCode::Query
    {
        return Err(DnsError::Malformed("not a standard query".into()));
    }
    let [query] = message.queries.as_slice() else {
        return Err(DnsError::Malformed(format!(
            "{} questions (one is supported)",
            message.queries.len()
        )));
    };
    Ok(Question {
        id: message.metadata.id,
        name: names::canonical(&query.name().to_ascii()),
        qtype: query.query_type(),
        message: message.clone(),
    })
}

impl Question {
    /// The question section as asked (what a reply must echo).
    pub(crate) fn queries(&self) -> &[Query] {
        &self.message.queries
    }
}

/// An answer with no records and the given code, echoing the question.
pub(crate) fn error_reply(question: &Question, code: ResponseCode) -> Result<Vec<u8>, DnsError> {
    let mut reply = Message::error_msg(question.id, OpCode::Query, code);
    reply.metadata.recursion_desired = question.message.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.add_queries(question.message.queries.iter().cloned());
    reply.to_vec().map_err(|e| DnsError::Build(e.to_string()))
}

/// A FORMERR for a packet that did not parse, when at least its id can be read.
pub(crate) fn format_error(packet: &[u8]) -> Option<Vec<u8>> {
    let id = u16::from_be_bytes([*packet.first()?, *packet.get(1)?]);
    Message::error_msg(id, OpCode::Query, ResponseCode::FormErr)
        .to_vec()
        .ok()
}

impl Refusal {
    pub(crate) fn code(self) -> ResponseCode {
        match self {
            Self::Refused => ResponseCode::Refused,
            Self::Nxdomain => ResponseCode::NXDomain,
        }
    }
}

/// An upstream reply to `question`: its A/AAAA records (any owner name: a CNAME chain
/// answers the question's name) with their TTLs in seconds.
pub(crate) fn addresses(question: &Question, reply: &[u8]) -> Result<Vec<(IpAddr, u32)>, DnsError> {
    let message = Message::from_vec(reply).map_err(|e| DnsError::Malformed(e.to_string()))?;
    if message.metadata.id != question.id || message.metadata.message_type != MessageType::Response
    {
        return Err(DnsError::Mismatch);
    }
    let asked: Vec<&Query> = question.message.queries.iter().collect();
    let echoed: Vec<&Query> = message.queries.iter().collect();
    if asked != echoed {
        return Err(DnsError::Mismatch);
    }
    Ok(message
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some((IpAddr::V4(a.0), r.ttl)),
            RData::AAAA(a) => Some((IpAddr::V6(a.0), r.ttl)),
            _ => None,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use hickory_proto::rr::{
        Name, Record,
        rdata::{A, AAAA, CNAME},
    };

    use super::*;

    fn query(name: &str, qtype: RecordType) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).expect("name"), qtype));
        m.to_vec().expect("encodes")
    }

    fn reply_to(q: &Question, records: Vec<Record>) -> Vec<u8> {
        let mut m = Message::response(q.id, OpCode::Query);
        m.add_queries(q.message.queries.iter().cloned());
        m.add_answers(records);
        m.to_vec().expect("encodes")
    }

    #[test]
    fn questions_are_canonical() {
        let q = parse_query(&query("A.Example.TEST.", RecordType::A)).expect("parses");
        assert_eq!(q.name, "a.example.test");
        assert_eq!(q.qtype, RecordType::A);
        assert!(parse_query(b"\x00\x01garbage").is_err());
        assert!(parse_query(&[]).is_err());
    }

    #[test]
    fn refusals_echo_id_and_question() {
        let q = parse_query(&query("evil.test.", RecordType::AAAA)).expect("parses");
        for refusal in [Refusal::Refused, Refusal::Nxdomain] {
            let bytes = error_reply(&q, refusal.code()).expect("builds");
            let m = Message::from_vec(&bytes).expect("parses");
            assert_eq!(m.metadata.id, q.id);
            assert_eq!(m.metadata.message_type, MessageType::Response);
            assert_eq!(m.metadata.response_code, refusal.code());
            assert_eq!(m.queries, q.message.queries);
            assert!(m.answers.is_empty());
        }
        let formerr = format_error(&[0x12, 0x34, 0xff]).expect("id readable");
        let m = Message::from_vec(&formerr).expect("parses");
        assert_eq!(m.metadata.id, 0x1234);
        assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    }

    #[test]
    fn answers_yield_addresses_through_cnames() {
        let q = parse_query(&query("a.example.test.", RecordType::A)).expect("parses");
        let owner = Name::from_ascii("a.example.test.").expect("name");
        let target = Name::from_ascii("cdn.example.net.").expect("name");
        let reply = reply_to(
            &q,
            vec![
                Record::from_rdata(owner, 300, RData::CNAME(CNAME(target.clone()))),
                Record::from_rdata(target.clone(), 7, RData::A(A(Ipv4Addr::new(127, 0, 0, 9)))),
                Record::from_rdata(target, 9, RData::AAAA(AAAA(Ipv6Addr::LOCALHOST))),
            ],
        );
        let got = addresses(&q, &reply).expect("matches");
        assert_eq!(
            got,
            vec![
                (IpAddr::V4(Ipv4Addr::new(127, 0, 0, 9)), 7),
                (IpAddr::V6(Ipv6Addr::LOCALHOST), 9)
            ]
        );
    }

    #[test]
    fn replies_to_another_question_are_rejected() {
        let q = parse_query(&query("a.example.test.", RecordType::A)).expect("parses");
        let other = parse_query(&query("b.example.test.", RecordType::A)).expect("parses");
        let mut forged = other.clone();
        forged.id = q.id;
        let reply = reply_to(&forged, Vec::new());
        assert!(matches!(addresses(&q, &reply), Err(DnsError::Mismatch)));
        let wrong_id = {
            let mut m = Message::response(q.id.wrapping_add(1), OpCode::Query);
            m.add_queries(q.message.queries.iter().cloned());
            m.to_vec().expect("encodes")
        };
        assert!(matches!(addresses(&q, &wrong_id), Err(DnsError::Mismatch)));
    }
}
