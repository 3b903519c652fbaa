//! S3 XML bodies: every writer's output is read back with an independent quick-xml parse and
//! checked field by field (so escaping and URL encoding are proved by round trip, not by string
//! matching), and every request parser refuses garbage, truncated, wrong-root and oversized
//! bodies with `MalformedXML`.

use hamster_protocol::s3err::{S3Error, S3ErrorCode};
use hamster_protocol::time::iso8601_ms;
use hamster_protocol::xml::*;
use percent_encoding::percent_decode_str;
use quick_xml::events::Event;
use quick_xml::Reader;

/// An element as read back: name, attributes, text and children.
#[derive(Debug, Default)]
struct Node {
    name: String,
    attrs: Vec<(String, String)>,
    text: String,
    children: Vec<Node>,
}

impl Node {
    fn all(&self, name: &str) -> Vec<&Node> {
        self.children.iter().filter(|c| c.name == name).collect()
    }
    fn one(&self, name: &str) -> &Node {
        let found = self.all(name);
        assert_eq!(found.len(), 1, "expected one <{name}> in <{}>", self.name);
        found[0]
    }
    fn text_of(&self, name: &str) -> &str {
        &self.one(name).text
    }
    fn has(&self, name: &str) -> bool {
        !self.all(name).is_empty()
    }
    fn names(&self) -> Vec<&str> {
        self.children.iter().map(|c| c.name.as_str()).collect()
    }
}

/// Reads a whole document with quick-xml, resolving references, and returns its root.
fn read_back(doc: &str) -> Node {
    assert!(
        doc.starts_with(r#"<?xml version="1.0" encoding="UTF-8"?>"#),
        "declaration: {doc}"
    );
    let mut reader = Reader::from_str(doc);
    let mut stack: Vec<Node> = Vec::new();
    let mut root = None;
    loop {
        let event = reader
            .read_event()
            .unwrap_or_else(|e| panic!("{e} in {doc}"));
        match event {
            Event::Start(ref s) | Event::Empty(ref s) => {
                let attrs = s
                    .attributes()
                    .map(|a| {
                        let a = a.unwrap();
                        let key = String::from_utf8(a.key.as_ref().to_vec()).unwrap();
                        (key, a.unescape_value().unwrap().into_owned())
                    })
                    .collect();
                let name = String::from_utf8(s.name().as_ref().to_vec()).unwrap();
                let node = Node {
                    name,
                    attrs,
                    ..Node::default()
                };
                if matches!(event, Event::Empty(_)) {
                    attach(&mut stack, &mut root, node);
                } else {
                    stack.push(node);
                }
            }
            Event::End(_) => {
                let node = stack.pop().unwrap();
                attach(&mut stack, &mut root, node);
            }
            Event::Text(t) => {
                if let Some(open) = stack.last_mut() {
                    open.text.push_str(&t.xml10_content().unwrap());
                }
            }
            Event::GeneralRef(r) => {
                let text = match r.resolve_char_ref().unwrap() {
                    Some(c) => c.to_string(),
                    None => quick_xml::escape::resolve_predefined_entity(&r.decode().unwrap())
                        .unwrap()
                        .to_string(),
                };
                stack.last_mut().unwrap().text.push_str(&text);
            }
            Event::Eof => break,
            _ => {}
        }
    }
    assert!(stack.is_empty());
    root.expect("a root element")
}

fn attach(stack: &mut [Node], root: &mut Option<Node>, node: Node) {
    match stack.last_mut() {
        Some(parent) => parent.children.push(node),
        None => *root = Some(node),
    }
}

fn assert_s3_root(node: &Node, name: &str) {
    assert_eq!(node.name, name);
    assert_eq!(node.attrs, [("xmlns".to_string(), S3_XMLNS.to_string())]);
}

fn url_decode(s: &str) -> String {
    percent_decode_str(s).decode_utf8().unwrap().into_owned()
}

/// Keys chosen to break naive writers: markup characters, whitespace XML would normalise,
/// characters XML cannot carry, multi-byte UTF-8, and characters with meaning in URLs.
const TRICKY: [&str; 8] = [
    "a&b<c>d\"e'f",
    "  spaced key  ",
    "tab\tline\nreturn\r",
    "日本/é/🐹",
    "plus+percent%25 sign",
    "]]>cdata-end",
    "ctrl\u{1}\u{1f}key",
    "&amp;already-escaped",
];

/// What a key looks like after a plain (not URL-encoded) round trip: characters XML 1.0 cannot
/// carry arrive as U+FFFD, everything else exactly.
fn xml_visible(key: &str) -> String {
    key.chars()
        .map(|c| {
            if c < ' ' && !matches!(c, '\t' | '\n' | '\r') {
                '\u{FFFD}'
            } else {
                c
            }
        })
        .collect()
}

fn entry(key: &str, owner: Option<Owner>) -> ObjectEntry {
    ObjectEntry {
        key: key.to_string(),
        last_modified_ms: 1_369_353_600_007,
        etag: "9b2cf535f27731c974343645a3985328".into(),
        size: 42,
        storage_class: "STANDARD".into(),
        owner,
    }
}

fn owner() -> Owner {
    Owner {
        id: "owner-id".into(),
        display_name: "Hamster & Co".into(),
    }
}

#[test]
fn error_body_round_trips_with_extras_in_order() {
    let doc = error_xml(
        "NoSuchKey",
        "The specified key does not exist.",
        "/bkt/a<b>",
        "req-1",
        &[("BucketName", "bkt"), ("Key", "a<b>")],
    );
    let root = read_back(&doc);
    assert_eq!(root.name, "Error");
    assert!(
        root.attrs.is_empty(),
        "AWS sends <Error> without a namespace"
    );
    assert_eq!(
        root.names(),
        [
            "Code",
            "Message",
            "BucketName",
            "Key",
            "Resource",
            "RequestId"
        ]
    );
    assert_eq!(root.text_of("Code"), "NoSuchKey");
    assert_eq!(root.text_of("Message"), "The specified key does not exist.");
    assert_eq!(root.text_of("Key"), "a<b>");
    assert_eq!(root.text_of("Resource"), "/bkt/a<b>");
    assert_eq!(root.text_of("RequestId"), "req-1");

    let err = S3Error::new(S3ErrorCode::NoSuchBucket);
    let root = read_back(&s3_error_xml(
        &err,
        "/nope",
        "req-2",
        &[("BucketName", "nope")],
    ));
    assert_eq!(root.text_of("Code"), "NoSuchBucket");
    assert_eq!(
        root.text_of("Message"),
        "The specified bucket does not exist"
    );
    assert_eq!(root.text_of("BucketName"), "nope");
}

#[test]
fn list_buckets_round_trips() {
    let buckets = [
        BucketEntry {
            name: "alpha".into(),
            created_ms: 0,
        },
        BucketEntry {
            name: "beta".into(),
            created_ms: 1_369_353_600_123,
        },
    ];
    let root = read_back(&list_buckets_xml(
        &owner(),
        &buckets,
        &BucketPage::default(),
    ));
    assert_s3_root(&root, "ListAllMyBucketsResult");
    assert_eq!(root.one("Owner").text_of("ID"), "owner-id");
    assert_eq!(root.one("Owner").text_of("DisplayName"), "Hamster & Co");
    let listed = root.one("Buckets").all("Bucket");
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].text_of("Name"), "alpha");
    assert_eq!(
        listed[0].text_of("CreationDate"),
        "1970-01-01T00:00:00.000Z"
    );
    assert_eq!(
        listed[1].text_of("CreationDate"),
        "2013-05-24T00:00:00.123Z"
    );

    let root = read_back(&list_buckets_xml(&owner(), &[], &BucketPage::default()));
    assert!(root.one("Buckets").children.is_empty());
    assert!(root.all("ContinuationToken").is_empty());
    assert!(root.all("Prefix").is_empty());

    let page = BucketPage {
        continuation_token: Some("next".into()),
        prefix: Some("al".into()),
    };
    let root = read_back(&list_buckets_xml(&owner(), &buckets[..1], &page));
    assert_eq!(root.text_of("ContinuationToken"), "next");
    assert_eq!(root.text_of("Prefix"), "al");
}

#[test]
fn location_round_trips() {
    let root = read_back(&location_xml("eu-west-1"));
    assert_s3_root(&root, "LocationConstraint");
    assert_eq!(root.text, "eu-west-1");
    let root = read_back(&location_xml("us-east-1"));
    assert_s3_root(&root, "LocationConstraint");
    assert_eq!(root.text, "");
}

fn v2(keys: &[&str], encoding_url: bool) -> ListV2 {
    ListV2 {
        bucket: "bkt".into(),
        prefix: "日本/ +".into(),
        delimiter: Some("/".into()),
        max_keys: 1000,
        start_after: Some("a b".into()),
        continuation_token: Some("tok-in".into()),
        next_continuation_token: Some("tok-out".into()),
        is_truncated: true,
        encoding_url,
        objects: keys.iter().map(|k| entry(k, None)).collect(),
        common_prefixes: vec!["dir one/".into(), "x&y/".into()],
    }
}

#[test]
fn list_v2_round_trips_tricky_keys() {
    let root = read_back(&list_v2_xml(&v2(&TRICKY, false)));
    assert_s3_root(&root, "ListBucketResult");
    assert_eq!(root.text_of("Name"), "bkt");
    assert_eq!(root.text_of("Prefix"), "日本/ +");
    assert_eq!(root.text_of("Delimiter"), "/");
    assert_eq!(root.text_of("StartAfter"), "a b");
    assert_eq!(root.text_of("ContinuationToken"), "tok-in");
    assert_eq!(root.text_of("NextContinuationToken"), "tok-out");
    assert_eq!(root.text_of("KeyCount"), (TRICKY.len() + 2).to_string());
    assert_eq!(root.text_of("MaxKeys"), "1000");
    assert_eq!(root.text_of("IsTruncated"), "true");
    assert!(!root.has("EncodingType"));
    let contents = root.all("Contents");
    assert_eq!(contents.len(), TRICKY.len());
    for (c, key) in contents.iter().zip(TRICKY) {
        assert_eq!(c.text_of("Key"), xml_visible(key));
        assert_eq!(c.text_of("LastModified"), iso8601_ms(1_369_353_600_007));
        assert_eq!(c.text_of("ETag"), "\"9b2cf535f27731c974343645a3985328\"");
        assert_eq!(c.text_of("Size"), "42");
        assert_eq!(c.text_of("StorageClass"), "STANDARD");
        assert!(!c.has("Owner"));
    }
    let prefixes: Vec<&str> = root
        .all("CommonPrefixes")
        .iter()
        .map(|p| p.text_of("Prefix"))
        .collect();
    assert_eq!(prefixes, ["dir one/", "x&y/"]);
}

#[test]
fn list_v2_url_encoding_carries_any_key() {
    let doc = list_v2_xml(&v2(&TRICKY, true));
    let root = read_back(&doc);
    assert_eq!(root.text_of("EncodingType"), "url");
    for (c, key) in root.all("Contents").iter().zip(TRICKY) {
        let encoded = c.text_of("Key");
        assert!(
            encoded
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'+' && b != b'&' && b != b'<'),
            "encoded key should be plain URL-safe text: {encoded:?}"
        );
        assert_eq!(
            url_decode(encoded),
            key,
            "lossless, control characters included"
        );
    }
    assert_eq!(url_decode(root.text_of("Prefix")), "日本/ +");
    assert_eq!(root.text_of("Prefix"), "%E6%97%A5%E6%9C%AC/%20%2B");
    assert_eq!(root.text_of("StartAfter"), "a%20b");
    assert_eq!(root.text_of("Delimiter"), "/");
    let prefixes: Vec<&str> = root
        .all("CommonPrefixes")
        .iter()
        .map(|p| p.text_of("Prefix"))
        .collect();
    assert_eq!(prefixes, ["dir%20one/", "x%26y/"]);
    // Continuation tokens are opaque and never re-encoded.
    assert_eq!(root.text_of("NextContinuationToken"), "tok-out");
}

#[test]
fn list_v2_minimal_page() {
    let r = ListV2 {
        bucket: "bkt".into(),
        prefix: String::new(),
        delimiter: None,
        max_keys: 0,
        start_after: None,
        continuation_token: None,
        next_continuation_token: None,
        is_truncated: false,
        encoding_url: false,
        objects: vec![entry("k", Some(owner()))],
        common_prefixes: vec![],
    };
    let root = read_back(&list_v2_xml(&r));
    assert_eq!(root.text_of("Prefix"), "");
    assert_eq!(root.text_of("KeyCount"), "1");
    assert_eq!(root.text_of("IsTruncated"), "false");
    for absent in [
        "Delimiter",
        "StartAfter",
        "ContinuationToken",
        "NextContinuationToken",
        "CommonPrefixes",
    ] {
        assert!(!root.has(absent), "{absent} should be absent");
    }
    let o = root.one("Contents").one("Owner");
    assert_eq!(
        (o.text_of("ID"), o.text_of("DisplayName")),
        ("owner-id", "Hamster & Co")
    );
}

#[test]
fn list_v1_round_trips() {
    let r = ListV1 {
        bucket: "bkt".into(),
        prefix: "p/ +".into(),
        delimiter: Some("/".into()),
        marker: "p/a b".into(),
        next_marker: Some("p/z&z".into()),
        max_keys: 2,
        is_truncated: true,
        encoding_url: false,
        objects: vec![entry("p/b<1>", Some(owner()))],
        common_prefixes: vec!["p/c/".into()],
    };
    let root = read_back(&list_v1_xml(&r));
    assert_s3_root(&root, "ListBucketResult");
    assert_eq!(root.text_of("Marker"), "p/a b");
    assert_eq!(root.text_of("NextMarker"), "p/z&z");
    assert_eq!(root.text_of("MaxKeys"), "2");
    assert_eq!(root.text_of("IsTruncated"), "true");
    assert!(!root.has("KeyCount"), "v1 has no KeyCount");
    assert_eq!(root.one("Contents").text_of("Key"), "p/b<1>");
    assert_eq!(root.one("Contents").one("Owner").text_of("ID"), "owner-id");
    assert_eq!(root.one("CommonPrefixes").text_of("Prefix"), "p/c/");

    let root = read_back(&list_v1_xml(&ListV1 {
        encoding_url: true,
        ..r
    }));
    assert_eq!(root.text_of("EncodingType"), "url");
    assert_eq!(root.text_of("Marker"), "p/a%20b");
    assert_eq!(root.text_of("NextMarker"), "p/z%26z");
    // A v1 listing's own Prefix is never encoded; SDKs do not decode it.
    assert_eq!(root.text_of("Prefix"), "p/ +");
    assert_eq!(url_decode(root.one("Contents").text_of("Key")), "p/b<1>");
}

#[test]
fn copy_and_multipart_results_round_trip() {
    let copy = CopyResult {
        etag: "abc".into(),
        last_modified_ms: 1_369_353_600_000,
    };
    for (doc, root_name) in [
        (copy_object_result_xml(&copy), "CopyObjectResult"),
        (copy_part_result_xml(&copy), "CopyPartResult"),
    ] {
        let root = read_back(&doc);
        assert_s3_root(&root, root_name);
        assert_eq!(root.text_of("ETag"), "\"abc\"");
        assert_eq!(root.text_of("LastModified"), "2013-05-24T00:00:00.000Z");
    }

    let root = read_back(&initiate_multipart_xml("bkt", "dir/a&b.bin", "up-1"));
    assert_s3_root(&root, "InitiateMultipartUploadResult");
    assert_eq!(root.names(), ["Bucket", "Key", "UploadId"]);
    assert_eq!(root.text_of("Key"), "dir/a&b.bin");
    assert_eq!(root.text_of("UploadId"), "up-1");

    let done = CompleteResult {
        location: "http://127.0.0.1:9000/bkt/dir/a%26b.bin".into(),
        bucket: "bkt".into(),
        key: "dir/a&b.bin".into(),
        etag: "d41d8cd98f00b204e9800998ecf8427e-3".into(),
    };
    let root = read_back(&complete_multipart_xml(&done));
    assert_s3_root(&root, "CompleteMultipartUploadResult");
    assert_eq!(root.text_of("Location"), done.location);
    assert_eq!(root.text_of("Bucket"), "bkt");
    assert_eq!(root.text_of("Key"), "dir/a&b.bin");
    assert_eq!(
        root.text_of("ETag"),
        "\"d41d8cd98f00b204e9800998ecf8427e-3\""
    );
}

#[test]
fn delete_result_round_trips() {
    let deleted = vec![
        ("a<1>".to_string(), None),
        ("b".to_string(), Some("v-2".to_string())),
    ];
    let errors = vec![(
        "c&d".to_string(),
        "AccessDenied".to_string(),
        "Access Denied".to_string(),
    )];
    let root = read_back(&delete_result_xml(&deleted, &errors));
    assert_s3_root(&root, "DeleteResult");
    let d = root.all("Deleted");
    assert_eq!(d.len(), 2);
    assert_eq!(d[0].text_of("Key"), "a<1>");
    assert!(!d[0].has("VersionId"));
    assert_eq!(d[1].text_of("VersionId"), "v-2");
    let e = root.one("Error");
    assert_eq!(
        (e.text_of("Key"), e.text_of("Code")),
        ("c&d", "AccessDenied")
    );
    assert_eq!(e.text_of("Message"), "Access Denied");
}

fn assert_malformed<T: std::fmt::Debug>(result: Result<T, S3Error>, what: &str) {
    match result {
        Err(e) => assert_eq!(e.code, S3ErrorCode::MalformedXML, "{what}: {e}"),
        Ok(v) => panic!("{what}: expected MalformedXML, got {v:?}"),
    }
}

/// Bodies no parser may accept, whatever root it expects.
const GARBAGE: [&[u8]; 9] = [
    b"not xml at all",
    b"<",
    b"<Delete><Object><Key>a</Key></Object>",
    b"<Delete><Object><Key>a</Key></Object></Delete><Delete/>",
    b"<Delete><Object><Key>a</Wrong></Object></Delete>",
    b"<Delete><Object><Key>&bogus;</Key></Object></Delete>",
    b"<Delete><Object><Key>&#x1;</Key></Object></Delete>",
    b"<!DOCTYPE d [<!ENTITY x \"y\">]><Delete><Object><Key>&x;</Key></Object></Delete>",
    b"\xff\xfe<Delete/>",
];

#[test]
fn create_bucket_body() {
    assert_eq!(parse_create_bucket(b"").unwrap(), None);
    assert_eq!(parse_create_bucket(b"  \r\n").unwrap(), None);
    let body = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
        <CreateBucketConfiguration xmlns="{S3_XMLNS}">
          <LocationConstraint> eu-west-1 </LocationConstraint>
        </CreateBucketConfiguration>"#
    );
    assert_eq!(
        parse_create_bucket(body.as_bytes()).unwrap().as_deref(),
        Some("eu-west-1")
    );
    let empty = b"<CreateBucketConfiguration><LocationConstraint/></CreateBucketConfiguration>";
    assert_eq!(parse_create_bucket(empty).unwrap(), None);
    assert_eq!(
        parse_create_bucket(b"<CreateBucketConfiguration/>").unwrap(),
        None
    );
    assert_malformed(
        parse_create_bucket(b"<LocationConstraint>x</LocationConstraint>"),
        "wrong root",
    );
    assert_malformed(
        parse_create_bucket(b"<CreateBucketConfiguration><LocationConstraint>eu"),
        "truncated",
    );
    for body in GARBAGE {
        assert_malformed(parse_create_bucket(body), &String::from_utf8_lossy(body));
    }
}

#[test]
fn complete_multipart_body() {
    let body = br#"<CompleteMultipartUpload xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
        <Part><PartNumber>1</PartNumber><ETag>"aaa"</ETag></Part>
        <Part><ETag>&quot;bbb&quot;</ETag><PartNumber> 2 </PartNumber><ChecksumCRC32>x</ChecksumCRC32></Part>
        <Part><PartNumber>10000</PartNumber><ETag>ccc</ETag></Part>
    </CompleteMultipartUpload>"#;
    let parts = parse_complete_multipart(body).unwrap();
    assert_eq!(
        parts,
        [
            (1, "aaa".to_string()),
            (2, "bbb".to_string()),
            (10000, "ccc".to_string())
        ]
    );

    // Order is reported as sent: InvalidPartOrder is the caller's decision, not a parse error.
    let unordered =
        b"<CompleteMultipartUpload><Part><PartNumber>3</PartNumber><ETag>a</ETag></Part>\
        <Part><PartNumber>2</PartNumber><ETag>b</ETag></Part></CompleteMultipartUpload>";
    assert_eq!(parse_complete_multipart(unordered).unwrap()[0].0, 3);

    let bad: [&[u8]; 8] = [
        b"<CompleteMultipartUpload/>",
        b"<CompleteMultipartUpload><Part><ETag>a</ETag></Part></CompleteMultipartUpload>",
        b"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber></Part></CompleteMultipartUpload>",
        b"<CompleteMultipartUpload><Part><PartNumber>0</PartNumber><ETag>a</ETag></Part></CompleteMultipartUpload>",
        b"<CompleteMultipartUpload><Part><PartNumber>10001</PartNumber><ETag>a</ETag></Part></CompleteMultipartUpload>",
        b"<CompleteMultipartUpload><Part><PartNumber>one</PartNumber><ETag>a</ETag></Part></CompleteMultipartUpload>",
        b"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><PartNumber>2</PartNumber><ETag>a</ETag></Part></CompleteMultipartUpload>",
        b"<Delete><Part><PartNumber>1</PartNumber><ETag>a</ETag></Part></Delete>",
    ];
    for body in bad {
        assert_malformed(
            parse_complete_multipart(body),
            &String::from_utf8_lossy(body),
        );
    }
    assert_malformed(
        parse_complete_multipart(&body[..body.len() - 10]),
        "truncated",
    );
    for body in GARBAGE {
        assert_malformed(
            parse_complete_multipart(body),
            &String::from_utf8_lossy(body),
        );
    }
}

fn delete_body(keys: usize) -> String {
    let mut body = String::from("<Delete><Quiet>true</Quiet>");
    for i in 0..keys {
        body.push_str(&format!("<Object><Key>k{i}</Key></Object>"));
    }
    body.push_str("</Delete>");
    body
}

#[test]
fn delete_objects_body() {
    let body = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
        <Delete xmlns="{S3_XMLNS}">
          <Object><Key>  spaced  </Key></Object>
          <Object><Key>a&amp;b&lt;c&gt;&#x9;&#xD;日本</Key><VersionId>v1</VersionId></Object>
          <Object><Key><![CDATA[raw <markup> & stuff]]></Key><VersionId></VersionId></Object>
        </Delete>"#
    );
    let (quiet, objects) = parse_delete_objects(body.as_bytes()).unwrap();
    assert!(!quiet, "Quiet defaults to false");
    assert_eq!(
        objects,
        [
            ("  spaced  ".to_string(), None),
            ("a&b<c>\t\r日本".to_string(), Some("v1".to_string())),
            ("raw <markup> & stuff".to_string(), None),
        ]
    );

    let (quiet, objects) = parse_delete_objects(delete_body(1000).as_bytes()).unwrap();
    assert!(quiet);
    assert_eq!(objects.len(), 1000);
    assert_eq!(objects[999].0, "k999");
    assert_malformed(
        parse_delete_objects(delete_body(1001).as_bytes()),
        "1001 keys",
    );

    let bad: [&[u8]; 5] = [
        b"<Delete/>",
        b"<Delete><Quiet>true</Quiet></Delete>",
        b"<Delete><Object><VersionId>v</VersionId></Object></Delete>",
        b"<Delete><Quiet>maybe</Quiet><Object><Key>a</Key></Object></Delete>",
        b"<CompleteMultipartUpload><Object><Key>a</Key></Object></CompleteMultipartUpload>",
    ];
    for body in bad {
        assert_malformed(parse_delete_objects(body), &String::from_utf8_lossy(body));
    }
    let full = delete_body(3);
    assert_malformed(
        parse_delete_objects(&full.as_bytes()[..full.len() - 3]),
        "truncated",
    );
    for body in GARBAGE {
        assert_malformed(parse_delete_objects(body), &String::from_utf8_lossy(body));
    }
}

/// Keys written by our own writer come back exactly through our own parser: the writer's
/// escaping and the parser's unescaping agree for every character XML can carry.
#[test]
fn writer_and_parser_agree_on_keys() {
    let mut body = String::from("<Delete>");
    for key in TRICKY {
        body.push_str(&format!("<Object><Key>{}</Key></Object>", escape(key)));
    }
    body.push_str("</Delete>");
    let (_, objects) = parse_delete_objects(body.as_bytes()).unwrap();
    let keys: Vec<String> = objects.into_iter().map(|(k, _)| k).collect();
    let expected: Vec<String> = TRICKY.iter().map(|k| xml_visible(k)).collect();
    assert_eq!(keys, expected);
}

#[test]
fn deeply_nested_body_is_refused() {
    let body = format!(
        "<Delete>{}{}</Delete>",
        "<a>".repeat(100),
        "</a>".repeat(100)
    );
    assert_malformed(parse_delete_objects(body.as_bytes()), "nesting");
}
