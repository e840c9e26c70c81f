"""A PaddleX PP-ShiTuV2 serving client, unchanged in substance, run against `imgfeat serve`.

It is the client of PaddleX's "General Image Recognition" serving docs (build an index, add an
image, remove an id, recognise an image), with PaddleX 3.x's reply fields. Only `requests` is
needed: no imgfeat, no paddlex.

    imgfeat serve --model-dir PP-ShiTuV2_rec_infer &            # prints the URL it listens on
    python examples/serve_paddlex_client.py http://127.0.0.1:8080 \\
        gallery/0/0.jpg=脉动 gallery/0/1.jpg=脉动 gallery/3/0.jpg=红牛 --add gallery/0/2.jpg=脉动 \\
        --infer test_images/100.jpeg --out out.jpg
"""
import argparse
import base64
import pprint
import sys

import requests


def encode(path):
    with open(path, "rb") as file:
        return base64.b64encode(file.read()).decode("ascii")


def pairs(specs):
    out = []
    for spec in specs:
        path, _, label = spec.partition("=")
        out.append({"image": encode(path), "label": label})
    return out


def call(base, endpoint, payload):
    resp = requests.post(f"{base}/{endpoint}", json=payload, timeout=120)
    if resp.status_code != 200:
        print(f"Request to {endpoint} failed with status code {resp.status_code}.")
        pprint.pp(resp.json())
        sys.exit(1)
    return resp.json()["result"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("url", help="the server, e.g. http://127.0.0.1:8080")
    ap.add_argument("gallery", nargs="+", help="IMAGE=LABEL pairs to build the index from")
    ap.add_argument("--add", nargs="*", default=[], help="IMAGE=LABEL pairs to add afterwards")
    ap.add_argument("--remove", type=int, nargs="*", default=[1], help="ids to remove")
    ap.add_argument("--infer", required=True, help="the image to recognise")
    ap.add_argument("--out", default="out.jpg", help="where to save the visualised result")
    args = ap.parse_args()

    result_index_build = call(args.url, "shitu-index-build", {"imageLabelPairs": pairs(args.gallery)})
    print(f"Number of images indexed: {result_index_build['imageCount']}")
    key = result_index_build["indexKey"]
    if args.add:
        result = call(args.url, "shitu-index-add", {"imageLabelPairs": pairs(args.add), "indexKey": key})
        print(f"Number of images indexed: {result['imageCount']}")
    if args.remove:
        result = call(args.url, "shitu-index-remove", {"ids": args.remove, "indexKey": key})
        print(f"Number of images indexed: {result['imageCount']}")
    result_infer = call(args.url, "shitu-infer", {"image": encode(args.infer), "indexKey": key})
    with open(args.out, "wb") as file:
        file.write(base64.b64decode(result_infer["image"]))
    print(f"Output image saved at {args.out}")
    print("\nDetected objects:")
    pprint.pp(result_infer["detectedObjects"])


if __name__ == "__main__":
    main()
