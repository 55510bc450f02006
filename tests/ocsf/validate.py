"""Validates OCSF events, one JSON object per line of each file given (or stdin), against
the JSON schema that ocsf-json-schema generates from the OCSF schema it ships: each event's
own version (`metadata.version`), class (`class_uid`) and profiles (`metadata.profiles`).

Prints one line per invalid event and a count per class; exits 1 when any event is invalid
or not an OCSF event at all.
"""

import collections
import json
import sys

import jsonschema
from ocsf_json_schema import OcsfJsonSchemaEmbedded, get_ocsf_schema, get_packaged_versions


def main(paths):
    schemas = {}
    validators = {}
    counts = collections.Counter()
    errors = 0
    sources = [(p, open(p, encoding="utf-8")) for p in paths] or [("<stdin>", sys.stdin)]
    for name, f in sources:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{name}:{n}"
            try:
                event = json.loads(line)
                version = event["metadata"]["version"]
                class_uid = event["class_uid"]
            except (ValueError, KeyError, TypeError) as e:
                print(f"{where}: not an OCSF event: {e!r}")
                errors += 1
                continue
            if version not in get_packaged_versions():
                print(f"{where}: OCSF {version} is not shipped by ocsf-json-schema")
                errors += 1
                continue
            if version not in schemas:
                schemas[version] = OcsfJsonSchemaEmbedded(get_ocsf_schema(version=version))
            profiles = tuple(event["metadata"].get("profiles", []))
            key = (version, class_uid, profiles)
            if key not in validators:
                schema = schemas[version]
                class_name = schema.lookup_class_name_from_uid(class_uid)
                validators[key] = jsonschema.Draft202012Validator(
                    schema.get_class_schema(class_name, list(profiles))
                )
            problems = sorted(validators[key].iter_errors(event), key=lambda e: list(e.path))
            for p in problems:
                path = "/".join(str(x) for x in p.absolute_path)
                print(f"{where}: class {class_uid}: /{path}: {p.message}")
            errors += bool(problems)
            counts[class_uid] += 1
    for class_uid, count in sorted(counts.items()):
        print(f"class {class_uid}: {count}")
    print(f"invalid: {errors}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
